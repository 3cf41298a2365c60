package eval

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestCoverExact(t *testing.T) {
	for _, tc := range []struct {
		name    string
		refs    [][]uint16
		query   []uint16
		self    bool
		matches []int32
		pieces  int
	}{
		{"two references spliced", [][]uint16{{1, 2, 3, 4}, {2, 3, 5}}, []uint16{1, 2, 3, 5}, false, []int32{1, 2, 3, 3}, 2},
		{"a copy is one piece", [][]uint16{{7, 1, 2, 3, 4, 8}}, []uint16{1, 2, 3, 4}, false, []int32{1, 2, 3, 4}, 1},
		{"unseen calls are pieces of their own", [][]uint16{{1, 2}}, []uint16{9, 9, 1}, false, []int32{0, 0, 1}, 3},
		{"no run spans two references", [][]uint16{{1, 2}, {3, 4}}, []uint16{2, 3}, false, []int32{1, 1}, 2},
		{"leave-one-out keeps a duplicate", [][]uint16{{1, 2, 3}, {1, 2, 3}, {4, 5}}, []uint16{1, 2, 3}, true, []int32{1, 2, 3}, 1},
		{"leave-one-out drops the only source", [][]uint16{{1, 2, 3}, {4, 5}}, []uint16{1, 2, 3}, true, []int32{0, 0, 0}, 3},
		{"own repeats do not count", [][]uint16{{1, 2, 1, 2}, {1}}, []uint16{1, 2, 1, 2}, true, []int32{1, 0, 1, 0}, 4},
		{"empty trace", [][]uint16{{1}}, nil, false, []int32{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := NewCoverIndex(traces(tc.refs...))
			m := x.Matches(tc.query, tc.self)
			if !slices.Equal(m, tc.matches) {
				t.Fatalf("matches %v, want %v", m, tc.matches)
			}
			if p := Pieces(m); p != tc.pieces {
				t.Fatalf("pieces %d, want %d", p, tc.pieces)
			}
			want := 0.0
			if len(tc.query) > 0 {
				want = float64(tc.pieces) / float64(len(tc.query))
			}
			if c := x.Cover(tc.query, tc.self); c != want {
				t.Fatalf("cover %v, want %v", c, want)
			}
		})
	}
}

// longestIn is the brute-force reference: the longest suffix of q[:i+1]
// found inside some trace of refs.
func longestIn(refs [][]uint16, q []uint16, i int) int32 {
	for l := i + 1; l > 0; l-- {
		for _, r := range refs {
			for s := 0; s+l <= len(r); s++ {
				if slices.Equal(r[s:s+l], q[i+1-l:i+1]) {
					return int32(l)
				}
			}
		}
	}
	return 0
}

// TestCoverAgainstBruteForce checks the automaton on random traces over a
// small alphabet (so runs repeat and states get cloned): outsider matches
// against a brute-force search, and leave-one-out matches against an index
// built without the trace.
func TestCoverAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	gen := func(n int) []uint16 {
		c := make([]uint16, n)
		for i := range c {
			c[i] = uint16(rng.IntN(4))
		}
		return c
	}
	for round := range 200 {
		refs := make([][]uint16, 1+rng.IntN(5))
		for i := range refs {
			refs[i] = gen(rng.IntN(30))
		}
		if round%3 == 0 && len(refs) > 1 {
			refs[1] = slices.Clone(refs[0]) // duplicates matter for leave-one-out
		}
		x := NewCoverIndex(traces(refs...))
		q := gen(1 + rng.IntN(40))
		m := x.Matches(q, false)
		for i := range q {
			if want := longestIn(refs, q, i); m[i] != want {
				t.Fatalf("round %d: refs %v query %v: match at %d is %d, want %d", round, refs, q, i, m[i], want)
			}
		}
		for i, r := range refs {
			others := slices.Concat(refs[:i], refs[i+1:])
			got, want := x.Matches(r, true), NewCoverIndex(traces(others...)).Matches(r, false)
			if !slices.Equal(got, want) {
				t.Fatalf("round %d: leave-one-out of %v among %v: %v, want %v", round, r, refs, got, want)
			}
		}
	}
}
