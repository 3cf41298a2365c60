package eval

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/bags/syscalls"
)

// ceilingFPRs are the false-positive rates at which the exact per-trace
// bound is read.
func ceilingFPRs() []float64 { return []float64{0, 0.01, 0.05, 0.10} }

// CeilingReport measures what no detector that sees one trace at a time can
// do on the held-out split Run reports (attack runs > DevRuns vs validation
// half B), in two senses:
//
//   - Exact: a per-trace detector is a function of the trace, so an attack
//     trace whose call sequence equals a normal trace's gets that trace's
//     score. ExactDR is the best detection rate any such detector can reach
//     at each false-positive rate on B (flag every distinct sequence that
//     occurs among the attacks, paying for the B copies of it).
//   - Novelty: a detector whose score grows only with the set of unseen
//     features (bosc-frac, bosc-epoch, STIDE) gives a trace with no unseen
//     feature its minimum score, tied with every fully covered B trace.
//     Coverage counts those traces for n-grams of each order, for the bags of
//     W calls, and for all of them at once, against the training data and
//     against training + validation A (the +A-loo regimes' database).
type CeilingReport struct {
	W, DevRuns int
	Held, Rep  int // held-out attack traces, validation-B traces
	// DupNormal: held-out attack traces equal to a training or validation-A
	// trace (a detector flags them only by flagging its own normal data).
	DupNormal []string
	// DupRep: held-out attack traces equal to a validation-B trace ("attack
	// = normal" pairs); RepDupNormal: B traces equal to a training or A
	// trace, for scale (normal data repeats itself a lot).
	DupRep       []string
	RepDupNormal int
	ExactDR      []ROCPoint // FPR on B (one of ceilingFPRs) → best possible DR
	Coverage     []CoverageRow
	Covered      []CoveredGroup // held-out attack traces covered by training + A under every feature
}

// CoverageRow counts fully covered traces against one reference set.
type CoverageRow struct {
	Ref           string
	Grams         [NGram + 1]int // [n]: held-out attack traces whose every n-gram is in Ref
	RepGrams      [NGram + 1]int // the same for B
	Bags, RepBags int            // every bag of W calls in Ref
	All, RepAll   int            // every n-gram (n ≤ NGram) and every bag
}

// CoveredGroup is a set of covered held-out attack traces with the same
// three most frequent syscalls: in ADFA-LD that names the program.
type CoveredGroup struct {
	Top              string // e.g. "poll clock_gettime socketcall"
	Traces           int
	MinLen, MaxLen   int
	Families, Sample []string
}

// NoveltyDR is the novelty bound of a coverage count: the best detection
// rate of a novelty detector at any FPR below the covered share of B.
func (c *CeilingReport) NoveltyDR(covered int) float64 {
	return float64(c.Held-covered) / float64(c.Held)
}

// coverSet is the set of bags and n-grams of a reference set.
type coverSet struct {
	bags  map[bags.Bag]struct{}
	grams map[gram]struct{}
}

func newCoverSet(w int, sets ...[]Trace) *coverSet {
	c := &coverSet{bags: map[bags.Bag]struct{}{}, grams: map[gram]struct{}{}}
	for _, ts := range sets {
		for _, t := range ts {
			for b := range bags.Slide(t.Calls, w) {
				c.bags[b] = struct{}{}
			}
			eachGram(t.Calls, func(g gram) { c.grams[g] = struct{}{} })
		}
	}
	return c
}

// covers reports, for a trace, whether every n-gram of each order and every
// bag of w calls is in the set. A trace too short for a feature has none
// unseen: it is covered for that feature.
func (c *coverSet) covers(calls []uint16, w int) (grams [NGram + 1]bool, bagsOK bool) {
	for n := range grams {
		grams[n] = true
	}
	eachGram(calls, func(g gram) {
		if _, ok := c.grams[g]; !ok {
			grams[g[0]] = false
		}
	})
	bagsOK = true
	for b := range bags.Slide(calls, w) {
		if _, ok := c.bags[b]; !ok {
			bagsOK = false
			break
		}
	}
	return grams, bagsOK
}

func seqKey(calls []uint16) string {
	b := make([]byte, 2*len(calls))
	for i, c := range calls {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return string(b)
}

// Ceiling measures the per-trace ceiling of d's held-out split: attack runs
// after devRuns vs the reporting half B, with windows of w calls.
func Ceiling(ctx context.Context, d *Dataset, devRuns, w int) (*CeilingReport, error) {
	if w < 1 || w > bags.MaxWindow {
		return nil, fmt.Errorf("ceiling: window %d outside 1..%d", w, bags.MaxWindow)
	}
	sel, rep := d.Split()
	_, held := splitAttacks(d.Attack, devRuns)
	if len(held) == 0 || len(rep) == 0 {
		return nil, fmt.Errorf("ceiling: %d held-out attack traces (dev runs 1..%d), %d validation-B traces: nothing to measure", len(held), devRuns, len(rep))
	}
	c := &CeilingReport{W: w, DevRuns: devRuns, Held: len(held), Rep: len(rep)}

	normal := map[string]bool{}
	for _, ts := range [][]Trace{d.Train, sel} {
		for _, t := range ts {
			normal[seqKey(t.Calls)] = true
		}
	}
	repN := map[string]int{} // B copies of each sequence
	repName := map[string]string{}
	for _, t := range rep {
		k := seqKey(t.Calls)
		repN[k]++
		repName[k] = t.Name
		if normal[k] {
			c.RepDupNormal++
		}
	}
	attN := map[string]int{} // held-out attack copies of each sequence
	for _, t := range held {
		k := seqKey(t.Calls)
		attN[k]++
		if normal[k] {
			c.DupNormal = append(c.DupNormal, t.Name)
		}
		if repN[k] > 0 {
			c.DupRep = append(c.DupRep, t.Name+" = "+repName[k])
		}
	}
	c.ExactDR = exactBound(attN, repN, len(held), len(rep))
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	refs := []struct {
		name string
		sets [][]Trace
	}{{"training", [][]Trace{d.Train}}, {"training + validation A", [][]Trace{d.Train, sel}}}
	groups := map[string]*CoveredGroup{}
	for ri, ref := range refs {
		cs := newCoverSet(w, ref.sets...)
		row := CoverageRow{Ref: ref.name}
		count := func(t Trace, gr *[NGram + 1]int, bg, all *int) bool {
			g, b := cs.covers(t.Calls, w)
			every := b
			for n := 1; n <= NGram; n++ {
				if g[n] {
					gr[n]++
				}
				every = every && g[n]
			}
			if b {
				*bg++
			}
			if every {
				*all++
			}
			return every
		}
		for _, t := range rep {
			count(t, &row.RepGrams, &row.RepBags, &row.RepAll)
		}
		for _, t := range held {
			if count(t, &row.Grams, &row.Bags, &row.All) && ri == len(refs)-1 {
				addCovered(groups, t)
			}
		}
		c.Coverage = append(c.Coverage, row)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	for _, g := range groups {
		c.Covered = append(c.Covered, *g)
	}
	sort.Slice(c.Covered, func(i, j int) bool {
		a, b := c.Covered[i], c.Covered[j]
		return a.Traces > b.Traces || a.Traces == b.Traces && a.Top < b.Top
	})
	return c, nil
}

// exactBound is, at each of ceilingFPRs, the most held-out attack traces a
// per-trace detector can flag while flagging at most ⌊fpr·nRep⌋ B traces:
// sequences absent from B cost nothing; the rest are a 0/1 knapsack (B
// copies as weight, attack copies as value), solved exactly.
func exactBound(att, rep map[string]int, nAtt, nRep int) []ROCPoint {
	free := 0
	var wt, val []int
	for k, a := range att {
		if b := rep[k]; b > 0 {
			wt, val = append(wt, b), append(val, a)
		} else {
			free += a
		}
	}
	var out []ROCPoint
	for _, f := range ceilingFPRs() {
		budget := int(math.Floor(f*float64(nRep) + 1e-9))
		best := make([]int, budget+1)
		for i := range wt {
			for c := budget; c >= wt[i]; c-- {
				best[c] = max(best[c], best[c-wt[i]]+val[i])
			}
		}
		out = append(out, ROCPoint{FPR: f, TPR: float64(free+best[budget]) / float64(nAtt)})
	}
	return out
}

func addCovered(groups map[string]*CoveredGroup, t Trace) {
	top := topCalls(t.Calls, 3)
	g := groups[top]
	if g == nil {
		g = &CoveredGroup{Top: top, MinLen: len(t.Calls)}
		groups[top] = g
	}
	g.Traces++
	g.MinLen, g.MaxLen = min(g.MinLen, len(t.Calls)), max(g.MaxLen, len(t.Calls))
	if !containsStr(g.Families, t.Family) {
		g.Families = append(g.Families, t.Family)
		sort.Strings(g.Families)
	}
	if len(g.Sample) < 3 {
		g.Sample = append(g.Sample, t.Name)
	}
}

func containsStr(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

// topCalls names the k most frequent syscalls of calls (ties by number).
func topCalls(calls []uint16, k int) string {
	n := map[uint16]int{}
	for _, c := range calls {
		n[c]++
	}
	nrs := make([]uint16, 0, len(n))
	for c := range n {
		nrs = append(nrs, c)
	}
	sort.Slice(nrs, func(i, j int) bool {
		return n[nrs[i]] > n[nrs[j]] || n[nrs[i]] == n[nrs[j]] && nrs[i] < nrs[j]
	})
	var names []string
	for _, c := range nrs[:min(k, len(nrs))] {
		name, ok := syscalls.I386.Name(c)
		if !ok {
			name = fmt.Sprint(c)
		}
		names = append(names, name)
	}
	return strings.Join(names, " ")
}
