package bags

// gramTable counts n-grams by their packed uint64 key: open addressing with
// linear probing and Fibonacci hashing. It replaced a Go map in the
// sequence model, whose lookups were most of the lm scorer's cost per
// window. A count is never 0 in a used slot, which marks the empty ones.
type gramTable struct {
	slots []gramSlot
	shift uint
	n     int
}

type gramSlot struct {
	key uint64
	val uint32
}

func newGramTable() *gramTable {
	return &gramTable{slots: make([]gramSlot, 64), shift: 64 - 6}
}

func (t *gramTable) home(k uint64) uint64 { return (k * 0x9E3779B97F4A7C15) >> t.shift }

// get returns the count of k (0 when absent).
func (t *gramTable) get(k uint64) uint32 {
	mask := uint64(len(t.slots) - 1)
	for i := t.home(k); ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.val == 0 || s.key == k {
			return s.val
		}
	}
}

// add raises k's count by one (saturating); a new key enters only while
// the table holds fewer than limit keys. It reports whether k is counted.
func (t *gramTable) add(k uint64, limit int) bool {
	mask := uint64(len(t.slots) - 1)
	i := t.home(k)
	for ; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.val == 0 {
			break
		}
		if s.key == k {
			s.val = satAdd(s.val, 1)
			return true
		}
	}
	if t.n >= limit {
		return false
	}
	t.put(k, 1)
	return true
}

// put stores k with count v (> 0), k being absent.
func (t *gramTable) put(k uint64, v uint32) {
	if (t.n+1)*4 > len(t.slots)*3 {
		t.grow()
	}
	mask := uint64(len(t.slots) - 1)
	i := t.home(k)
	for t.slots[i].val != 0 {
		i = (i + 1) & mask
	}
	t.slots[i] = gramSlot{key: k, val: v}
	t.n++
}

func (t *gramTable) grow() {
	old := t.slots
	t.slots = make([]gramSlot, 2*len(old))
	t.shift--
	t.n = 0
	for _, s := range old {
		if s.val != 0 {
			t.put(s.key, s.val)
		}
	}
}

func (t *gramTable) len() int { return t.n }

// each calls fn for every key and count, in no particular order.
func (t *gramTable) each(fn func(k uint64, v uint32)) {
	for _, s := range t.slots {
		if s.val != 0 {
			fn(s.key, s.val)
		}
	}
}
