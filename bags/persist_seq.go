package bags

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// appendTo encodes the sequence model after the bags (format in
// persist.go); pos maps a table id to the bag's position in the file.
func (m *seqModel) appendTo(buf []byte, pos []uint32) []byte {
	le := binary.LittleEndian
	type gram struct {
		a, b, c uint32
		n       uint32
	}
	split := func(k uint64) (uint32, uint32, uint32) {
		return uint32(k >> 42), uint32(k>>21) & (maxSeqBags - 1), uint32(k) & (maxSeqBags - 1)
	}
	less := func(x, y gram) int {
		for _, d := range [3]int{cmpU32(x.a, y.a), cmpU32(x.b, y.b), cmpU32(x.c, y.c)} {
			if d != 0 {
				return d
			}
		}
		return 0
	}
	bi := make([]gram, 0, m.bi.len())
	m.bi.each(func(k uint64, n uint32) {
		_, a, b := split(k)
		bi = append(bi, gram{a: pos[a], b: pos[b], n: n})
	})
	slices.SortFunc(bi, less)
	buf = le.AppendUint64(buf, uint64(len(bi)))
	for _, g := range bi {
		buf = le.AppendUint32(le.AppendUint32(le.AppendUint32(buf, g.a), g.b), g.n)
	}
	tri := make([]gram, 0, m.tri.len())
	m.tri.each(func(k uint64, n uint32) {
		a, b, c := split(k)
		tri = append(tri, gram{a: pos[a], b: pos[b], c: pos[c], n: n})
	})
	slices.SortFunc(tri, less)
	buf = le.AppendUint64(buf, uint64(len(tri)))
	for _, g := range tri {
		buf = le.AppendUint32(le.AppendUint32(le.AppendUint32(le.AppendUint32(buf, g.a), g.b), g.c), g.n)
	}
	return le.AppendUint64(buf, m.overflow)
}

func cmpU32(x, y uint32) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// decodeSeq reads the sequence model of a profile of nbags bags: sizes are
// checked against the bytes left before anything is allocated, every index
// must name a bag, counts must be positive and keys strictly ascending.
func decodeSeq(d *decoder, nbags uint32) (*seqModel, error) {
	m := newSeqModel()
	var last [3]uint32
	read := func(tab *gramTable, arity int, entry uint64, what string) error {
		n := d.u64()
		if d.err != nil {
			return d.err
		}
		if n > uint64(len(d.b))/entry {
			return fmt.Errorf("%d %s do not fit %d bytes: %w", n, what, len(d.b), ErrCorrupt)
		}
		for i := uint64(0); i < n; i++ {
			var g [3]uint32
			for j := 0; j < arity; j++ {
				g[j] = d.u32()
				if g[j] >= nbags {
					return fmt.Errorf("%s %d names bag %d of %d: %w", what, i, g[j], nbags, ErrCorrupt)
				}
			}
			c := d.u32()
			if c == 0 || (i > 0 && !lessGram(last, g)) {
				return fmt.Errorf("%s %d has count 0 or is out of order: %w", what, i, ErrCorrupt)
			}
			last = g
			if arity == 2 {
				tab.put(biKey(g[0], g[1]), c)
			} else {
				tab.put(triKey(g[0], g[1], g[2]), c)
			}
		}
		return nil
	}
	if err := read(m.bi, 2, biEntry, "bigram"); err != nil {
		return nil, err
	}
	if err := read(m.tri, 3, triEntry, "trigram"); err != nil {
		return nil, err
	}
	m.overflow = d.u64()
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%d bytes after the sequence model: %w", len(d.b), ErrCorrupt)
	}
	return m, nil
}

func lessGram(x, y [3]uint32) bool {
	for i := range x {
		if x[i] != y[i] {
			return x[i] < y[i]
		}
	}
	return false
}
