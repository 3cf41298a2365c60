package eval

import (
	"context"
	"fmt"
)

// The +A-loo regime scores each validation-A trace against training + A
// without that one trace, and chooses thresholds on those scores. In the
// session view a pseudo-session is a run of consecutive A traces, which may
// be runs of the same program, so leaving out one trace keeps its siblings
// in the database: A's pseudo-sessions could look more normal than B's, and
// thresholds chosen on them could be too low.
//
// The fold-out check measures that instead of arguing it. A is cut into F
// folds twice, each fold is left out of the database in turn, and its
// traces are scored against the rest:
//   - by pseudo-session (session s goes to fold s mod F): a trace loses its
//     whole pseudo-session, siblings included;
//   - by trace (trace i goes to fold i mod F): the same 1/F of A leaves the
//     database, but siblings stay, so the smaller database is the only
//     change.
// Thresholds chosen on each set of scores are then applied to B and the
// held-out attacks. The gap between the two fold-outs is the session
// effect; the gap between the trace fold-out and leave-one-out is the cost
// of the smaller database.

// FoldCheck is one variant's held-out figures at thresholds chosen on A
// scored three ways.
type FoldCheck struct {
	Variant string
	Rows    []FoldCheckRow // per trace first, then one per session aggregate
}

// FoldCheckRow is one unit (per trace, or a session aggregate) of a check.
type FoldCheckRow struct {
	Unit string // "trace" or the aggregate's name
	// Held-out DR and FPR on B at the threshold chosen on A scored
	// leave-one-out, with session folds, and with trace folds.
	LOO, SessionFold, TraceFold [2]float64
}

// foldScores scores every selection trace against training + selection
// without the traces of its fold (fold[i] in 0..folds-1), filling the same
// fields as the leave-one-out regime.
func foldScores(ctx context.Context, train, sel []Trace, fold []int, folds int, cfg Config) ([]Scores, error) {
	out := make([]Scores, len(sel))
	for f := range folds {
		refs := append([]Trace(nil), train...)
		var idx []int
		for i, t := range sel {
			if fold[i] == f {
				idx = append(idx, i)
			} else {
				refs = append(refs, t)
			}
		}
		if len(idx) == 0 {
			continue
		}
		rs := newReferences(refs, cfg)
		for _, i := range idx {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			out[i] = rs.score(sel[i].Calls, false, -1)
		}
	}
	return out, nil
}

// foldAssignments returns, for n selection traces, the fold of each trace
// by pseudo-session (traces after the last whole pseudo-session continue
// the cycle one by one) and by trace.
func foldAssignments(n int, sizes []int, folds int) (bySession, byTrace []int, err error) {
	if folds < 2 {
		return nil, nil, fmt.Errorf("fold-out check: %d folds, want 2 or more", folds)
	}
	bySession, byTrace = make([]int, n), make([]int, n)
	next := 0
	for s, b := range PseudoSessions(n, sizes) {
		for i := b[0]; i < b[1]; i++ {
			bySession[i] = s % folds
		}
		next = b[1]
	}
	for i := next; i < n; i++ {
		bySession[i] = (i - next) % folds
	}
	for i := range byTrace {
		byTrace[i] = i % folds
	}
	return bySession, byTrace, nil
}

// foldCheck computes one variant's rows: sel is A scored leave-one-out,
// sessFold and traceFold A scored with the two fold-outs (all three already
// mapped through the variant's score), rep is B and held the held-out
// attacks.
func foldCheck(name string, sel, sessFold, traceFold, rep, held []float64, heldTraces []Trace, sizes []int, aggs []SessionAgg, target float64) FoldCheck {
	at := func(th float64, n, a []float64) [2]float64 { return [2]float64{Rate(a, th), Rate(n, th)} }
	fc := FoldCheck{Variant: name}
	fc.Rows = append(fc.Rows, FoldCheckRow{Unit: "trace",
		LOO:         at(ThresholdAtFPR(sel, target), rep, held),
		SessionFold: at(ThresholdAtFPR(sessFold, target), rep, held),
		TraceFold:   at(ThresholdAtFPR(traceFold, target), rep, held)})
	selB, repB := PseudoSessions(len(sel), sizes), PseudoSessions(len(rep), sizes)
	heldG, _ := runGroups(heldTraces)
	for _, g := range aggs {
		n, a := aggBounds(g, rep, repB), aggGroups(g, held, heldG)
		th := func(xs []float64) float64 { return ThresholdAtFPR(aggBounds(g, xs, selB), target) }
		fc.Rows = append(fc.Rows, FoldCheckRow{Unit: g.Name,
			LOO: at(th(sel), n, a), SessionFold: at(th(sessFold), n, a), TraceFold: at(th(traceFold), n, a)})
	}
	return fc
}
