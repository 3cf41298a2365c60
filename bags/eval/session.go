package eval

import (
	"fmt"
	"path/filepath"
	"sort"
)

// The session view scores an attack *run* (one Attack_Data_Master folder: the
// processes of one attack session) instead of one process. ESCAPE watches a
// container's whole stream, so a session in which any process looks
// anomalous is what the live sensor would flag. It is reported beside the
// per-trace figures, never instead of them: the unit, and so the sample
// size, is different (15 held-out runs, not 171 traces).
//
// Normal data has no sessions, so pseudo-sessions are formed for fairness:
// consecutive validation traces (name order) are grouped into groups whose
// sizes cycle through the attack runs' trace counts (runs in dataset order),
// so a normal pseudo-session has as many chances to contain one odd process
// as an attack session has. The split is deterministic and uses only the
// number of traces per run, never a score.

// SessionAgg turns the per-trace scores of a session into one score.
type SessionAgg struct {
	Name string
	K    int // mean of the K highest trace scores; 1 is the maximum
}

// DefaultSessionAggs returns the maximum (one anomalous process flags the
// session) and the mean of the top 3 (it takes two or three).
func DefaultSessionAggs() []SessionAgg {
	return []SessionAgg{{Name: "max", K: 1}, {Name: "top3-mean", K: 3}}
}

// Score aggregates xs (not modified); a session with fewer than K traces
// averages all of them.
func (g SessionAgg) Score(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Sort(sort.Reverse(sort.Float64Slice(s)))
	k := min(max(g.K, 1), len(s))
	var sum float64
	for _, x := range s[:k] {
		sum += x
	}
	return sum / float64(k)
}

// SessionResult is one variant's session view under one aggregate.
type SessionResult struct {
	Agg                        string
	Sel, Rep, Dev, Held        int            // sessions: pseudo-sessions of the selection data / of B, dev / held-out runs
	DevAUC, DevDR5             float64        // selection pseudo-sessions vs dev runs
	AUC, DR1, DR5, DR10        float64        // B pseudo-sessions vs held-out runs
	Threshold                  float64        // chosen on the selection pseudo-sessions at TargetFPR
	HeldDR, HeldFPR            float64        // that threshold on held-out runs / B pseudo-sessions
	FamilyDetected, FamilyRuns map[string]int // held-out runs detected / held-out runs, per family
}

// RunSizes returns the number of traces of each attack run (folder), in
// dataset order: the size distribution of the normal pseudo-sessions.
func RunSizes(attacks []Trace) []int {
	var sizes []int
	last := ""
	for _, t := range attacks {
		if k := runKey(t); k != last || len(sizes) == 0 {
			sizes = append(sizes, 0)
			last = k
		}
		sizes[len(sizes)-1]++
	}
	return sizes
}

// PseudoSessions cuts n consecutive items into groups whose sizes cycle
// through sizes, and returns each group's [start, end) bounds. A final group
// that would be shorter than its size is dropped, so every pseudo-session
// has exactly the size of some attack run.
func PseudoSessions(n int, sizes []int) [][2]int {
	var out [][2]int
	if len(sizes) == 0 {
		return out
	}
	for i, at := 0, 0; ; i++ {
		s := sizes[i%len(sizes)]
		if s <= 0 || at+s > n {
			return out
		}
		out = append(out, [2]int{at, at + s})
		at += s
	}
}

func runKey(t Trace) string { return filepath.Dir(t.Name) }

// runGroups returns, in order of first appearance, the indices of ts that
// share a run folder, and each group's family.
func runGroups(ts []Trace) (groups [][]int, fams []string) {
	at := map[string]int{}
	for i, t := range ts {
		k := runKey(t)
		g, ok := at[k]
		if !ok {
			g = len(groups)
			at[k] = g
			groups = append(groups, nil)
			fams = append(fams, t.Family)
		}
		groups[g] = append(groups[g], i)
	}
	return groups, fams
}

func aggBounds(g SessionAgg, xs []float64, bounds [][2]int) []float64 {
	out := make([]float64, len(bounds))
	for i, b := range bounds {
		out[i] = g.Score(xs[b[0]:b[1]])
	}
	return out
}

func aggGroups(g SessionAgg, xs []float64, groups [][]int) []float64 {
	out := make([]float64, len(groups))
	buf := make([]float64, 0, 32)
	for i, idx := range groups {
		buf = buf[:0]
		for _, j := range idx {
			buf = append(buf, xs[j])
		}
		out[i] = g.Score(buf)
	}
	return out
}

// sessionInput is one variant's per-trace scores, aligned with the traces
// they came from: sel (the regime's normal selection traces, name order),
// rep (validation B), dev and held attack traces (dataset order). devSel and
// devAtt are the dev columns (out-of-fold for a fitted combiner).
type sessionInput struct {
	sel, rep, devSel, devAtt, held []float64
	devTraces, heldTraces          []Trace
	sizes                          []int
	target                         float64
}

// sessionView computes the session figures of one variant under each
// aggregate. Thresholds come from the selection pseudo-sessions only.
func sessionView(in sessionInput, aggs []SessionAgg) []SessionResult {
	selB := PseudoSessions(len(in.sel), in.sizes)
	devSelB := PseudoSessions(len(in.devSel), in.sizes)
	repB := PseudoSessions(len(in.rep), in.sizes)
	devG, _ := runGroups(in.devTraces)
	heldG, heldF := runGroups(in.heldTraces)
	var out []SessionResult
	for _, g := range aggs {
		s, n := aggBounds(g, in.sel, selB), aggBounds(g, in.rep, repB)
		ds, da := aggBounds(g, in.devSel, devSelB), aggGroups(g, in.devAtt, devG)
		a := aggGroups(g, in.held, heldG)
		th := ThresholdAtFPR(s, in.target)
		r := SessionResult{Agg: g.Name, Sel: len(s), Rep: len(n), Dev: len(da), Held: len(a),
			DevAUC: AUC(ds, da), DevDR5: Rate(da, ThresholdAtFPR(ds, in.target)),
			AUC: AUC(n, a), DR1: DRAtFPR(n, a, 0.01), DR5: DRAtFPR(n, a, 0.05), DR10: DRAtFPR(n, a, 0.10),
			Threshold: th, HeldDR: Rate(a, th), HeldFPR: Rate(n, th),
			FamilyDetected: map[string]int{}, FamilyRuns: map[string]int{}}
		for i, x := range a {
			r.FamilyRuns[heldF[i]]++
			if x > th {
				r.FamilyDetected[heldF[i]]++
			}
		}
		out = append(out, r)
	}
	return out
}

// String renders the headline session numbers for logs and tests.
func (s SessionResult) String() string {
	return fmt.Sprintf("session/%s AUC %.3f  DR@1%% %.1f%%  DR@5%% %.1f%%  DR@10%% %.1f%%  held-out: DR %.1f%% FPR %.1f%% (%d runs, %d pseudo-sessions)",
		s.Agg, s.AUC, 100*s.DR1, 100*s.DR5, 100*s.DR10, 100*s.HeldDR, 100*s.HeldFPR, s.Held, s.Rep)
}
