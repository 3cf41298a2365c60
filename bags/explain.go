package bags

import "sort"

// Evidence is one system call of an epoch's unseen windows. An analyst
// reads it to tell an attack (a call the workload never makes: execve in a
// database server) from new normal behaviour (familiar calls in a new mix).
type Evidence struct {
	Syscall uint16
	Windows uint64 // the epoch's unseen windows that hold the call
	Novel   bool   // no bag of the database holds the call
}

// Explain returns the system calls of e's windows whose bag the database
// lacks: novel calls first, then by the number of unseen windows that hold
// them, at most n. It allocates, so the sensor calls it for anomalous epochs
// only, never on the hot path.
func (p *Profile) Explain(e Epoch, n int) []Evidence {
	if n <= 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	windows := make(map[uint16]uint64)
	for i := range e.Bags {
		bc := &e.Bags[i]
		if bc.Count == 0 || p.db.find(hashBag(&bc.Bag), &bc.Bag) != nil {
			continue
		}
		// The bag is sorted: count each distinct call once per window.
		for j, s := range bc.Bag {
			if s == pad {
				break
			}
			if j == 0 || bc.Bag[j-1] != s {
				windows[s] += uint64(bc.Count)
			}
		}
	}
	if len(windows) == 0 {
		return nil
	}
	known := p.knownCalls()
	out := make([]Evidence, 0, len(windows))
	for nr, w := range windows {
		out = append(out, Evidence{Syscall: nr, Windows: w, Novel: !known.has(nr)})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Novel != b.Novel {
			return a.Novel
		}
		if a.Windows != b.Windows {
			return a.Windows > b.Windows
		}
		return a.Syscall < b.Syscall
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// callSet is the set of system calls that some bag of the database holds,
// kept up to date incrementally: the database only grows, in insertion
// order, so each bag is folded in once. An attack's flood of anomalous epochs
// then costs no database scan each.
type callSet struct {
	bits [1 << 16 / 64]uint64
	upTo int // bags of the database's insertion order folded in
}

func (c *callSet) has(nr uint16) bool { return c.bits[nr/64]&(1<<(nr%64)) != 0 }

// knownCalls returns the profile's call set, folding in the bags added since
// its last use. The caller holds p.mu.
func (p *Profile) knownCalls() *callSet {
	if p.known == nil {
		p.known = new(callSet)
	}
	c := p.known
	for _, i := range p.db.used[c.upTo:] {
		for _, nr := range p.db.slots[i].bag {
			if nr == pad {
				break
			}
			c.bits[nr/64] |= 1 << (nr % 64)
		}
	}
	c.upTo = len(p.db.used)
	return c
}
