package eval

import (
	"math"
	"slices"
	"sort"

	"github.com/escape-mtd/escape/bags"
)

// KNN compares a trace's bag-frequency profile with the profiles of the
// reference (normal) traces: the BoSC representation (bags of W-call windows)
// kept per trace instead of pooled into one database. A trace is summarised
// as its TF-IDF-weighted bag-count vector; its score is the mean cosine
// distance to its K nearest reference traces. Novelty is thus measured
// against the closest normal program, not against the union of all programs:
// a trace that shares most of its bags (by weight) with one training trace
// scores near 0 even if another program dominates the database, and an
// unseen bag weighs the most (its document frequency is 0).
type KNN struct {
	W, K int
	// LogTF weights a bag by 1+log(count) instead of its raw count.
	LogTF bool

	ids  map[bags.Bag]int32 // reference bags → dense id
	df   []int32            // reference traces containing each bag
	post [][]posting        // bag id → reference traces holding it (normalised weight)
	n    int                // reference traces
	// refOf lists, per reference trace, its own (id, normalised weight)
	// entries: Score uses it to leave a trace out of its own neighbourhood.
	refs [][]posting
}

type posting struct {
	i int32 // reference trace (in post) or bag id (in refs)
	w float32
}

// NewKNN builds the reference set from normal traces with windows of w calls.
func NewKNN(refs []Trace, w, k int, logTF bool) *KNN {
	m := &KNN{W: w, K: k, LogTF: logTF, ids: map[bags.Bag]int32{}, n: len(refs)}
	counts := make([]map[int32]int, len(refs))
	for r, t := range refs {
		c := map[int32]int{}
		for b := range bags.Slide(t.Calls, w) {
			id, ok := m.ids[b]
			if !ok {
				id = int32(len(m.df))
				m.ids[b] = id
				m.df = append(m.df, 0)
			}
			if c[id] == 0 {
				m.df[id]++
			}
			c[id]++
		}
		counts[r] = c
	}
	m.post = make([][]posting, len(m.df))
	m.refs = make([][]posting, len(refs))
	for r, c := range counts {
		var ps []posting
		var norm float64
		for id, n := range c {
			x := m.tf(n) * m.idf(m.df[id])
			ps = append(ps, posting{id, float32(x)})
			norm += x * x
		}
		norm = math.Sqrt(norm)
		slices.SortFunc(ps, func(a, b posting) int { return int(a.i - b.i) })
		for j := range ps {
			ps[j].w = float32(float64(ps[j].w) / norm)
			m.post[ps[j].i] = append(m.post[ps[j].i], posting{int32(r), ps[j].w})
		}
		m.refs[r] = ps
	}
	return m
}

func (m *KNN) tf(n int) float64 {
	if m.LogTF {
		return 1 + math.Log(float64(n))
	}
	return float64(n)
}

// idf is the smoothed inverse document frequency: an unseen bag (df 0) gets
// the largest weight, a bag present in every reference trace the smallest.
func (m *KNN) idf(df int32) float64 {
	return math.Log(float64(m.n+1)/float64(df+1)) + 1
}

// Score returns the mean cosine distance (1 − cosine similarity) of the
// trace's TF-IDF bag vector to its K nearest reference traces, in [0, 1].
// exclude ≥ 0 leaves reference trace number exclude out (leave-one-out
// scoring of a reference trace); pass −1 otherwise. A trace with no window
// scores 0.
func (m *KNN) Score(calls []uint16, exclude int) float64 {
	c := map[bags.Bag]int{}
	for b := range bags.Slide(calls, m.W) {
		c[b]++
	}
	if len(c) == 0 {
		return 0
	}
	type entry struct {
		id int32
		w  float64
	}
	var es []entry
	var norm float64
	loo := exclude >= 0 && exclude < m.n
	for b, n := range c {
		id, ok := m.ids[b]
		df := int32(0)
		if ok {
			df = m.df[id]
			// Leave-one-out must also take the left-out trace out of the
			// document frequencies: otherwise a bag only it holds weighs
			// idf(1) instead of the unseen weight idf(0), and reference
			// traces score systematically closer than any other trace.
			if loo && m.holds(exclude, id) {
				df--
			}
		}
		x := m.tf(n) * m.idf(df)
		norm += x * x
		if df > 0 {
			es = append(es, entry{id, x})
		}
	}
	norm = math.Sqrt(norm)
	sim := make([]float64, m.n)
	for _, e := range es {
		for _, p := range m.post[e.id] {
			sim[p.i] += e.w * float64(p.w)
		}
	}
	k := min(m.K, m.n)
	if loo {
		sim[exclude] = math.Inf(-1)
		k = min(m.K, m.n-1)
	}
	if k <= 0 {
		return 1
	}
	sort.Sort(sort.Reverse(sort.Float64Slice(sim)))
	var d float64
	for _, s := range sim[:k] {
		d += 1 - s/norm
	}
	return clamp01(d / float64(k))
}

// holds reports whether reference trace r contains bag id (refs[r] is
// sorted by id).
func (m *KNN) holds(r int, id int32) bool {
	_, found := slices.BinarySearchFunc(m.refs[r], id, func(p posting, id int32) int { return int(p.i - id) })
	return found
}

func clamp01(x float64) float64 {
	if x < 0 {
		return 0
	}
	if x > 1 {
		return 1
	}
	return x
}
