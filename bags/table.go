package bags

// table is an open-addressing hash set of bags with a uint32 value each,
// used for both the per-epoch aggregation and the profile database. It exists
// because a Go map[Bag]uint32 rehashes the 32-byte key on every access, which
// alone cost ~80 ns per syscall in BenchmarkMatcher; here the hash is an
// additive multiset hash the Windower updates in O(1) per call (add the new
// call's code, subtract the leaving one's).
//
// Slots are stamped with a generation: reset() empties the table in O(1) by
// bumping it, so an epoch boundary costs nothing per slot. There is no
// deletion (profiles never evict).
type table struct {
	slots []slot
	mask  uint64
	gen   uint32
	n     int
	used  []uint32 // occupied slot indices, in insertion order
}

type slot struct {
	bag  Bag
	hash uint64
	val  uint32
	gen  uint32
	// idx is the entry's insertion index (0, 1, ...): a dense, stable id
	// of the bag in this table, which growing keeps (it re-inserts in
	// insertion order). Sequence models key their n-grams by it.
	idx uint32
}

func newTable(hint int) *table {
	c := 16
	for c < hint*4/3+1 {
		c <<= 1
	}
	return &table{slots: make([]slot, c), mask: uint64(c - 1), gen: 1, used: make([]uint32, 0, hint)}
}

// callCode is the per-syscall term of the multiset hash (splitmix64 of the
// number). Sums of such terms identify a multiset with high probability; equal
// hashes are always confirmed by comparing the bags.
func callCode(s uint16) uint64 {
	z := uint64(s) + 0x9E3779B97F4A7C15
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// hashBag computes the same hash as the Windower's running sum.
func hashBag(b *Bag) uint64 {
	var h uint64
	for _, s := range b {
		if s == pad {
			break
		}
		h += callCode(s)
	}
	return h
}

func (t *table) len() int { return t.n }

// find returns the slot holding b, or nil.
func (t *table) find(h uint64, b *Bag) *slot {
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.gen != t.gen {
			return nil
		}
		if s.hash == h && s.bag == *b {
			return s
		}
	}
}

// upsert returns the slot for b, inserting it with value 0 if absent
// (inserted reports that). Allocates only when the table grows.
func (t *table) upsert(h uint64, b *Bag) (s *slot, inserted bool) {
	i := h & t.mask
	for ; ; i = (i + 1) & t.mask {
		s = &t.slots[i]
		if s.gen != t.gen {
			break
		}
		if s.hash == h && s.bag == *b {
			return s, false
		}
	}
	if (t.n+1)*4 > len(t.slots)*3 {
		t.grow()
		return t.upsert(h, b)
	}
	*s = slot{bag: *b, hash: h, gen: t.gen, idx: uint32(t.n)}
	t.n++
	t.used = append(t.used, uint32(i))
	return s, true
}

func (t *table) grow() {
	old, oldUsed := t.slots, t.used
	t.slots = make([]slot, 2*len(old))
	t.mask = uint64(len(t.slots) - 1)
	t.used = make([]uint32, 0, 2*cap(oldUsed))
	gen := t.gen
	t.gen, t.n = 1, 0
	for _, i := range oldUsed {
		s := &old[i]
		if s.gen != gen {
			continue
		}
		ns, _ := t.upsert(s.hash, &s.bag)
		ns.val = s.val
	}
}

// reset empties the table in O(1) (generation bump), keeping its memory.
func (t *table) reset() {
	t.gen++
	t.n = 0
	t.used = t.used[:0]
	if t.gen == 0 { // wrapped after 2^32 resets: stale stamps could match
		for i := range t.slots {
			t.slots[i].gen = 0
		}
		t.gen = 1
	}
}

// each calls fn for every entry in insertion order until it returns false.
func (t *table) each(fn func(*slot) bool) {
	for _, i := range t.used {
		if !fn(&t.slots[i]) {
			return
		}
	}
}
