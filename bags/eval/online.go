package eval

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/escape-mtd/escape/bags"
	"go.uber.org/zap"
)

// SlowAttackConfig is the slow-attacker measurement of online learning
// (SlowAttack).
type SlowAttackConfig struct {
	Root          string
	Window, Epoch int
	Rules         []string  // scorers (default lm, the daemon's default, and bosc)
	Rates         []float64 // the attacker's share of an epoch's windows
	Seeds         int       // runs per rule, rate and arm
	MaxEpochs     int       // a run that has not learned the attack by then is censored
	Check         int       // the attack is probed every Check epochs
	// TargetFPR is the share of validation-A epochs over the threshold
	// (chosen there, as the eval's thresholds are). It also sets how often
	// normal traffic alone voids the guard's quarantine.
	TargetFPR float64
	Guard     bags.OnlineConfig // the guarded arms' guard (its defaults: the daemon's)
	// Quarantines are the guarded arms: Guard with each quarantine.
	Quarantines []time.Duration
	DevRuns     int // attack runs 1..DevRuns are left out (dev split)
	// MinAttackCalls leaves out the attack traces too short to need a slow
	// attacker: a few windows are taught in one epoch whatever the rate.
	MinAttackCalls int
	Log            *zap.Logger
}

// DefaultSlowAttackConfig is the measurement BENCHMARKS.md reports.
func DefaultSlowAttackConfig(root string) SlowAttackConfig {
	return SlowAttackConfig{Root: root, Window: 10, Epoch: 1000, Rules: []string{bags.RuleLM, bags.RuleBoSC},
		Rates: []float64{0, 0.01, 0.02, 0.05, 0.1}, Seeds: 7, MaxEpochs: 10000, Check: 1,
		TargetFPR: 0.05, DevRuns: 5, MinAttackCalls: 500,
		Quarantines: []time.Duration{bags.DefaultQuarantine, 30 * time.Second}}
}

// SlowAttackRun is one run: how many mixed epochs until the attack was
// learned, or Censored.
type SlowAttackRun struct {
	Attack   string // the attack trace mixed in
	Calls    int    // its length
	Epochs   int    // mixed epochs until the probe stopped alarming (MaxEpochs if censored)
	Censored bool
	Alarms   int // mixed epochs over the threshold meanwhile
	Taught   int // epochs taught meanwhile (the attacker's and normal ones)
}

// SlowAttackRow is one rule, rate and arm over the seeds.
type SlowAttackRow struct {
	Rule    string
	Rate    float64
	Guarded bool
	Guard   bags.OnlineConfig // when Guarded
	Runs    []SlowAttackRun
}

// Median is the median epochs to learn the attack; +Inf when more than
// half the runs were censored.
func (r SlowAttackRow) Median() float64 {
	xs := make([]float64, len(r.Runs))
	for i, x := range r.Runs {
		xs[i] = float64(x.Epochs)
		if x.Censored {
			xs[i] = math.Inf(1)
		}
	}
	return medianOf(xs)
}

// Learned counts the runs in which the attack was learned.
func (r SlowAttackRow) Learned() int {
	n := 0
	for _, x := range r.Runs {
		if !x.Censored {
			n++
		}
	}
	return n
}

// MedianAlarms is the median number of alarms a run raised.
func (r SlowAttackRow) MedianAlarms() float64 {
	xs := make([]float64, len(r.Runs))
	for i, x := range r.Runs {
		xs[i] = float64(x.Alarms)
	}
	return medianOf(xs)
}

func medianOf(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// SlowAttackReport is the measurement's result.
type SlowAttackReport struct {
	Config     SlowAttackConfig
	Thresholds map[string]float64 // calibrated, per rule
	Rows       []SlowAttackRow
}

// SlowAttack measures how long a slow attacker who stays under the
// threshold takes to be learned by online learning, with the daemon's
// poisoning guard (bags.Guard) and without it (every below-threshold epoch
// taught at once, the reference implementation's online learning).
//
// As everywhere in this package, a trace is its own stream and stands for
// an epoch (cut in epochs of Epoch windows if longer): the profile learns
// the training traces; its threshold is the one validation half A's epochs
// exceed at TargetFPR (the daemon's own calibration, one false alarm a
// day, would be the largest held-out score of ADFA-LD's training traces,
// one almost all unseen, under which every attack is slow); the normal
// traffic is validation half B's epochs, one a second, from a random
// start, cycling. Each run picks a held-out attack trace the profile flags
// on its own; into every normal epoch the attacker inserts, at a random
// place, a contiguous run of ⌈rate × windows⌉ of its own windows, in
// order, cycling through the trace. Rate 0 is the control: what learning
// normal traffic alone does to the attack's score. Every Check epochs the
// attack trace alone is scored: once none of its epochs is over the
// threshold, the attack is learned. Anomalous epochs never teach, in either
// arm; in the guarded arm an anomaly voids the quarantine.
func SlowAttack(ctx context.Context, cfg SlowAttackConfig) (*SlowAttackReport, error) {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Seeds < 1 || cfg.MaxEpochs < 1 || cfg.Check < 1 || len(cfg.Rates) == 0 || len(cfg.Rules) == 0 {
		return nil, fmt.Errorf("slow attack: seeds %d, max epochs %d, check %d, %d rates, %d rules: want each >= 1",
			cfg.Seeds, cfg.MaxEpochs, cfg.Check, len(cfg.Rates), len(cfg.Rules))
	}
	for _, r := range cfg.Rates {
		if !(r >= 0 && r < 1) {
			return nil, fmt.Errorf("slow attack: rate %v: want a share of the windows in [0, 1)", r)
		}
	}
	arms := []*bags.OnlineConfig{nil}
	for _, q := range cfg.Quarantines {
		gc := cfg.Guard
		gc.Quarantine = q
		g, err := bags.NewGuard(gc)
		if err != nil {
			return nil, fmt.Errorf("slow attack: %w", err)
		}
		gc = g.Config() // the defaults filled in, for the report
		arms = append(arms, &gc)
	}
	d, err := LoadADFA(ctx, cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("slow attack: %w", err)
	}
	_, held := splitAttacks(d.Attack, cfg.DevRuns)
	sel, repB := d.Split()
	normal := traceWindows(repB, cfg.Window, cfg.Epoch)
	var valA []bags.Epoch
	for _, ws := range traceWindows(sel, cfg.Window, cfg.Epoch) {
		valA = append(valA, epochOf(ws))
	}
	rep := &SlowAttackReport{Config: cfg, Thresholds: map[string]float64{}}
	for _, rule := range cfg.Rules {
		base, thr, err := thresholdedProfile(d.Train, valA, rule, cfg)
		if err != nil {
			return nil, fmt.Errorf("slow attack, %s: %w", rule, err)
		}
		rep.Thresholds[rule] = thr
		cfg.Log.Info("slow attack: profile calibrated", zap.String("rule", rule), zap.Float64("threshold", thr))
		for _, rate := range cfg.Rates {
			for _, arm := range arms {
				row := SlowAttackRow{Rule: rule, Rate: rate, Guarded: arm != nil}
				if arm != nil {
					row.Guard = *arm
				}
				for seed := range cfg.Seeds {
					if err := ctx.Err(); err != nil {
						return nil, err
					}
					run, err := slowAttackRun(base, thr, rule, held, normal, rate, arm, uint64(seed), cfg)
					if err != nil {
						return nil, fmt.Errorf("slow attack, %s rate %v seed %d: %w", rule, rate, seed, err)
					}
					row.Runs = append(row.Runs, run)
				}
				cfg.Log.Info("slow attack", zap.String("rule", rule), zap.Float64("rate", rate), zap.Bool("guarded", arm != nil),
					zap.Float64("median_epochs", row.Median()), zap.Int("learned", row.Learned()))
				rep.Rows = append(rep.Rows, row)
			}
		}
	}
	return rep, nil
}

// traceWindows is each trace's windows, cut in epochs of at most e.
func traceWindows(ts []Trace, w, e int) [][]bags.Bag {
	var out [][]bags.Bag
	for _, t := range ts {
		ws := windowsOf(t.Calls, w)
		for i := 0; i < len(ws); i += e {
			out = append(out, ws[i:min(i+e, len(ws))])
		}
	}
	return out
}

func windowsOf(calls []uint16, w int) []bags.Bag {
	out := make([]bags.Bag, 0, max(len(calls)-w+1, 0))
	for b := range bags.Slide(calls, w) {
		out = append(out, b)
	}
	return out
}

// epochOf aggregates windows into an epoch, its order kept.
func epochOf(ws []bags.Bag) bags.Epoch {
	idx := make(map[bags.Bag]uint32, len(ws)/4)
	e := bags.Epoch{Windows: uint64(len(ws)), Order: make([]uint32, len(ws))}
	for i, b := range ws {
		j, ok := idx[b]
		if !ok {
			j = uint32(len(e.Bags))
			idx[b] = j
			e.Bags = append(e.Bags, bags.BagCount{Bag: b})
		}
		e.Bags[j].Count++
		e.Order[i] = j
	}
	return e
}

// thresholdedProfile learns the training traces and sets the threshold that valA's epochs exceed at TargetFPR.
func thresholdedProfile(train []Trace, valA []bags.Epoch, rule string, cfg SlowAttackConfig) ([]byte, float64, error) {
	p, err := bags.New(bags.WithWindow(cfg.Window), bags.WithEpoch(cfg.Epoch), bags.WithArch("i386"),
		bags.WithSequence(bags.RuleNeedsSequence(rule)))
	if err != nil {
		return nil, 0, err
	}
	s, err := bags.NewScorer(rule, p)
	if err != nil {
		return nil, 0, err
	}
	for _, ws := range traceWindows(train, cfg.Window, cfg.Epoch) {
		if _, err := s.Train(epochOf(ws)); err != nil {
			return nil, 0, fmt.Errorf("train: %w", err)
		}
	}
	scores := make([]float64, len(valA))
	for i, e := range valA {
		scores[i] = s.Value(e)
	}
	thr := ThresholdAtFPR(scores, cfg.TargetFPR)
	if math.IsNaN(thr) {
		return nil, 0, errors.New("no validation epochs to choose a threshold on")
	}
	s.SetThreshold(thr)
	p.SetComplete(true)
	var buf bytes.Buffer
	if _, err := p.WriteTo(&buf); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), s.Threshold(), nil
}
