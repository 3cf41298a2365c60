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
// them, at most n. It allocates and scans the database, so the sensor calls
// it for anomalous epochs only, never on the hot path.
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
	known := make(map[uint16]bool, len(windows))
	p.db.each(func(s *slot) bool {
		for _, nr := range s.bag {
			if nr == pad {
				break
			}
			if _, ok := windows[nr]; ok {
				known[nr] = true
			}
		}
		return len(known) < len(windows)
	})
	out := make([]Evidence, 0, len(windows))
	for nr, w := range windows {
		out = append(out, Evidence{Syscall: nr, Windows: w, Novel: !known[nr]})
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
