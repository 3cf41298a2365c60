package eval

// CoverIndex answers "what is the longest run of calls ending here that
// some normal reference trace also contains?" for every position of a trace,
// with no bound on the run's length. It is a suffix automaton of the
// reference traces joined by a separator call that no trace contains, so no
// match can span two traces.
//
// Each automaton state also records how many distinct reference traces
// contain its substrings. That gives leave-one-out matching for free: a
// reference trace scored against the others accepts only substrings found
// in at least two traces (itself and another one), which is exactly the
// index built without it.
//
// The covering score built on it follows the covering similarity of
// Marteau (IEEE TIFS 14(4), 2019): the fewest pieces of normal traces that,
// laid end to end, spell the trace. A trace copied from one normal trace is
// one piece; an attack that splices normal fragments in a new order needs
// many, however common each fragment is. Unlike the 6-gram channels it sees
// order beyond six calls, and unlike the bags it sees order at all.
type CoverIndex struct {
	length []int32 // longest substring of each state
	link   []int32 // suffix link
	docs   []int32 // distinct reference traces containing the state's substrings
	first  []int32 // first outgoing edge (−1: none), a linked list through next
	root   []int32 // dense transitions of the start state, by call (−1: none)
	edges  []coverEdge
}

type coverEdge struct {
	to, next int32
	call     uint16
}

// separator joins the reference traces. ADFA-LD's i386 numbers stay below
// 400 and the sensor's x86_64 ones below 512, so 0xffff is never a call.
const separator = 0xffff

// NewCoverIndex indexes refs (the standard online construction of Blumer et
// al., linear in the total number of calls).
func NewCoverIndex(refs []Trace) *CoverIndex {
	n := 1
	for _, t := range refs {
		n += len(t.Calls) + 1
	}
	x := &CoverIndex{
		length: make([]int32, 1, 2*n), link: append(make([]int32, 0, 2*n), -1),
		docs: make([]int32, 1, 2*n), first: append(make([]int32, 0, 2*n), -1),
		root: make([]int32, separator+1), edges: make([]coverEdge, 0, 3*n),
	}
	for i := range x.root {
		x.root[i] = -1
	}
	last := int32(0)
	// ends[p] is the state of the whole input up to call p, for the
	// trace-count pass below.
	var ends []int32
	var owner []int32
	for d, t := range refs {
		for _, c := range t.Calls {
			last = x.extend(last, c)
			ends, owner = append(ends, last), append(owner, int32(d))
		}
		last = x.extend(last, separator)
	}
	// Every state whose substrings end at call p lies on the suffix-link
	// path from ends[p]; marking that path with p's trace, and stopping at a
	// state this trace already marked (its ancestors are marked too), counts
	// each state's distinct traces.
	mark := make([]int32, len(x.length))
	for i := range mark {
		mark[i] = -1
	}
	for p, s := range ends {
		d := owner[p]
		for ; s > 0 && mark[s] != d; s = x.link[s] {
			mark[s] = d
			x.docs[s]++
		}
	}
	x.docs[0] = int32(len(refs))
	return x
}

func (x *CoverIndex) next(s int32, c uint16) int32 {
	if s == 0 {
		return x.root[c]
	}
	for e := x.first[s]; e >= 0; e = x.edges[e].next {
		if x.edges[e].call == c {
			return x.edges[e].to
		}
	}
	return -1
}

func (x *CoverIndex) setNext(s int32, c uint16, to int32) {
	if s == 0 {
		x.root[c] = to
		return
	}
	for e := x.first[s]; e >= 0; e = x.edges[e].next {
		if x.edges[e].call == c {
			x.edges[e].to = to
			return
		}
	}
	x.addEdge(s, c, to)
}

func (x *CoverIndex) addEdge(s int32, c uint16, to int32) {
	x.edges = append(x.edges, coverEdge{to: to, next: x.first[s], call: c})
	x.first[s] = int32(len(x.edges) - 1)
}

func (x *CoverIndex) state(length int32) int32 {
	x.length = append(x.length, length)
	x.link = append(x.link, -1)
	x.docs = append(x.docs, 0)
	x.first = append(x.first, -1)
	return int32(len(x.length) - 1)
}

func (x *CoverIndex) extend(last int32, c uint16) int32 {
	cur := x.state(x.length[last] + 1)
	p := last
	for ; p >= 0 && x.next(p, c) < 0; p = x.link[p] {
		x.setNext(p, c, cur)
	}
	if p < 0 {
		x.link[cur] = 0
		return cur
	}
	q := x.next(p, c)
	if x.length[p]+1 == x.length[q] {
		x.link[cur] = q
		return cur
	}
	clone := x.state(x.length[p] + 1)
	for e := x.first[q]; e >= 0; e = x.edges[e].next {
		x.addEdge(clone, x.edges[e].call, x.edges[e].to)
	}
	x.link[clone] = x.link[q]
	for ; p >= 0 && x.next(p, c) == q; p = x.link[p] {
		x.setNext(p, c, clone)
	}
	x.link[q], x.link[cur] = clone, clone
	return cur
}

// Matches returns, for each call of calls, the length of the longest run of
// calls ending there that occurs in a reference trace; self=true means calls
// is itself one of the reference traces, whose own copy must not count: only
// runs found in at least one other reference trace are accepted.
func (x *CoverIndex) Matches(calls []uint16, self bool) []int32 {
	need := int32(1)
	if self {
		need = 2
	}
	out := make([]int32, len(calls))
	s, l := int32(0), int32(0)
	for i, c := range calls {
		for {
			if c != separator {
				if t := x.next(s, c); t >= 0 && x.docs[t] >= need {
					s, l = t, l+1
					break
				}
			}
			if s == 0 {
				l = 0
				break
			}
			// The suffix link's strings are suffixes of the current match,
			// found in at least as many traces.
			s = x.link[s]
			l = x.length[s]
		}
		out[i] = l
	}
	return out
}

// Pieces is the fewest runs of reference calls that spell calls, a call no
// reference contains being a piece of its own. Because every part of a
// reference run is again a reference run, taking the longest match from the
// end backwards is optimal.
func Pieces(matches []int32) int {
	n := 0
	for j := len(matches) - 1; j >= 0; n++ {
		j -= max(int(matches[j]), 1)
	}
	return n
}

// Cover is the covering channel of a trace: the pieces per call, in (0, 1].
// It is the Ziv–Merhav cross-parsing rate without its log factor (with it,
// the cross-entropy estimate ranked the dev attacks no better; see
// docs/bosc.md): a trace
// spelled by one reference run of n calls scores 1/n, one where no two
// consecutive calls follow each other in any reference scores 1. An empty
// trace scores 0.
func (x *CoverIndex) Cover(calls []uint16, self bool) float64 {
	if len(calls) == 0 {
		return 0
	}
	return float64(Pieces(x.Matches(calls, self))) / float64(len(calls))
}
