package eval

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/escape-mtd/escape/bags"
)

// CalibrationTargets are the per-trace false-alarm rates the calibration
// check aims at (ADFA-LD has no clock, so a trace stands for an epoch and
// the target is a rate per trace, not per day).
var CalibrationTargets = []float64{0.01, 0.05}

// CalibrationRow is the daemon's per-identity calibration replayed on
// ADFA-LD for one rule and target: the threshold comes from the learning
// phase alone (training traces, each scored before it is learned), never
// from validation data, and is read on validation B and the held-out
// attacks.
type CalibrationRow struct {
	Rule      string
	Target    float64 // false-alarm rate per trace aimed at
	Held      int     // held-out learning scores used (the later half)
	Threshold float64
	FPR, DR   float64 // validation B; held-out attack runs
	// ChosenFPR and ChosenDR are the same rule with its threshold chosen
	// as the table's are, on validation A at the target rate.
	ChosenFPR, ChosenDR float64
}

// Calibration replays, per rule, what the daemon does while an identity
// learns: each training trace is scored (largest epoch score, as the
// daemon's per-epoch rule over the trace's epochs of e calls) by the
// profile as it stands, then learned; the threshold is bags.TailThreshold
// over the later half of those held-out scores, as bags.Calibrator uses.
func Calibration(ctx context.Context, d *Dataset, sel, rep, held []Trace, w, e int) ([]CalibrationRow, error) {
	var rows []CalibrationRow
	for _, rule := range bags.Rules() {
		p, err := bags.New(bags.WithWindow(w), bags.WithEpoch(e), bags.WithArch("i386"), bags.WithSequence(true))
		if err != nil {
			return nil, err
		}
		s, err := bags.NewScorer(rule, p)
		if err != nil {
			return nil, err
		}
		x, err := bags.NewWindower(w, e)
		if err != nil {
			return nil, err
		}
		var scores []float64
		for _, t := range d.Train {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			eps := traceEpochs(x, t.Calls)
			worst := 0.0
			for _, ep := range eps {
				worst = max(worst, s.Value(ep))
			}
			scores = append(scores, worst)
			for _, ep := range eps {
				if _, err := s.Train(ep); err != nil {
					return nil, fmt.Errorf("calibration, train on %s: %w", t.Name, err)
				}
			}
		}
		later := slices.Clone(scores[len(scores)/2:])
		slices.Sort(later)
		traceScore := func(ts []Trace) []float64 {
			out := make([]float64, len(ts))
			for i, t := range ts {
				for _, ep := range traceEpochs(x, t.Calls) {
					out[i] = max(out[i], s.Value(ep))
				}
			}
			return out
		}
		a, b, att := traceScore(sel), traceScore(rep), traceScore(held)
		for _, q := range CalibrationTargets {
			thr := bags.TailThreshold(later, q)
			chosen := ThresholdAtFPR(a, q)
			rows = append(rows, CalibrationRow{Rule: rule, Target: q, Held: len(later), Threshold: thr,
				FPR: Rate(b, thr), DR: Rate(att, thr), ChosenFPR: Rate(b, chosen), ChosenDR: Rate(att, chosen)})
		}
	}
	return rows, nil
}

// traceEpochs cuts one trace, its own stream, into deep-copied epochs.
func traceEpochs(x *bags.Windower, calls []uint16) []bags.Epoch {
	x.Reset()
	var out []bags.Epoch
	keep := func(ep bags.Epoch) {
		out = append(out, bags.Epoch{Windows: ep.Windows, Bags: slices.Clone(ep.Bags), Order: slices.Clone(ep.Order)})
	}
	for _, c := range calls {
		if ep, ok := x.Push(c); ok {
			keep(ep)
		}
	}
	if ep, ok := x.Flush(); ok {
		keep(ep)
	}
	return out
}

func writeCalibration(b *strings.Builder, rows []CalibrationRow) {
	if len(rows) == 0 {
		return
	}
	b.WriteString("\nCALIBRATION (the daemon's per-identity threshold, from the learning phase alone): each training trace scored by the profile before it is learned; threshold = bags.TailThreshold of the later half of those scores at the target rate per trace. Read on validation B and the held-out attack runs; beside it the same rule with its threshold chosen on A at the same rate.\n\n")
	b.WriteString("| scorer | target FPR | held-out scores | threshold | FPR on B | held-out DR | FPR / DR, T chosen on A |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(b, "| %s | %.0f%% | %d | %.3f | %.1f%% | %.1f%% | %.1f%% / %.1f%% |\n", r.Rule, 100*r.Target, r.Held, r.Threshold,
			100*r.FPR, 100*r.DR, 100*r.ChosenFPR, 100*r.ChosenDR)
	}
}
