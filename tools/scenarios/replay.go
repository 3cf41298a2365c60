package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"time"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/bags/eval"
	"github.com/escape-mtd/escape/bags/trace"
)

// The scorers of the table: the daemon's two rules, and the eval's
// reference points on the same epochs.
const (
	scorerLM     = bags.RuleLM   // live, calibrated on its own learning phase as the daemon does
	scorerBoSC   = bags.RuleBoSC // live papers' rule, T chosen on the validation part
	scorerPapers = "papers-bosc" // bags/eval's papers' rule: the epoch's own windows only
	scorerSTIDE  = "stide"       // bags/eval's STIDE: share of unseen 6-grams in the epoch
)

func scorerNames() []string { return []string{scorerLM, scorerBoSC, scorerPapers, scorerSTIDE} }

// ReplayConfig is the offline replay's shape, the daemon's defaults.
type ReplayConfig struct {
	Window, Epoch int
	Flush         time.Duration
	// TrainShare and ValidShare split the normal phase by time: train on
	// the first part, choose the thresholds of the rules the daemon does
	// not calibrate on the next, and count false alarms on the rest.
	TrainShare, ValidShare float64
	FalseAlarmsPerDay      float64
}

// DefaultReplay is the daemon's W, E and flush with a 50/20/30 split.
func DefaultReplay() ReplayConfig {
	return ReplayConfig{Window: bags.DefaultWindow, Epoch: bags.DefaultEpoch, Flush: 5 * time.Second,
		TrainShare: 0.5, ValidShare: 0.2, FalseAlarmsPerDay: bags.DefaultFalseAlarmsPerDay}
}

// Recording is a recording's calls, read whole.
type Recording struct {
	Meta  trace.Meta
	Calls []uint16
	TS    []int64 // Unix ns, one per call
}

// ReadRecording parses an `escape-sensor record` file; every call must carry
// a time stamp, in order.
func ReadRecording(ctx context.Context, path string) (*Recording, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read recording: %w", err)
	}
	defer f.Close()
	r, err := trace.NewRecordReader(f)
	if err != nil {
		return nil, fmt.Errorf("read recording %s: %w", path, err)
	}
	rec := &Recording{Meta: r.Meta()}
	for i := 0; ; i++ {
		if i&0xFFFF == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read recording %s, call %d: %w", path, i+1, err)
		}
		if ev.TS == 0 {
			return nil, fmt.Errorf("read recording %s: call %d has no time stamp", path, i+1)
		}
		rec.Calls = append(rec.Calls, ev.Nr)
		rec.TS = append(rec.TS, ev.TS)
	}
	if len(rec.Calls) == 0 {
		return nil, fmt.Errorf("read recording %s: no calls recorded", path)
	}
	return rec, nil
}

// epoch is one epoch of the replay: calls [from, to) of the recording,
// closed at time closed (the call that ends it, by count or by flush).
type epoch struct {
	from, to      int
	start, closed int64
	scores        [4]float64 // by scorerNames order
}

// ScorerResult is one scorer's verdict on one scenario.
type ScorerResult struct {
	Scorer    string
	Threshold float64
	Detected  bool
	Latency   time.Duration // from the attack's start to the first epoch over the threshold
	// FalseAlarms is the count of normal test epochs over the threshold,
	// over TestSpan of normal load.
	FalseAlarms int
	AttackMax   float64 // the attack phase's largest score
}

// FalseAlarmsPerHour is FalseAlarms over the test span.
func (r ScorerResult) FalseAlarmsPerHour(span time.Duration) float64 {
	if span <= 0 {
		return math.NaN()
	}
	return float64(r.FalseAlarms) / span.Hours()
}

// Replay is the offline verdict of every scorer on one recording.
type Replay struct {
	Calls                           int
	TrainSpan, ValidSpan, TestSpan  time.Duration
	TrainEpochs, ValidEpochs, Tests int
	AttackEpochs                    int
	Results                         []ScorerResult // scorerNames order
}

// Result returns the named scorer's result.
func (r *Replay) Result(scorer string) (ScorerResult, bool) {
	i := slices.IndexFunc(r.Results, func(s ScorerResult) bool { return s.Scorer == scorer })
	if i < 0 {
		return ScorerResult{}, false
	}
	return r.Results[i], true
}

// segment cuts the recording into the daemon's epochs: E calls, or Flush
// after an epoch's first call (closed by the next call, as the sensor's
// flush does), the window sliding across epochs. fn sees each epoch while
// its bags are valid.
func segment(rec *Recording, cfg ReplayConfig, fn func(epoch, bags.Epoch) error) error {
	x, err := bags.NewWindower(cfg.Window, cfg.Epoch)
	if err != nil {
		return err
	}
	from := 0
	for i, nr := range rec.Calls {
		if cfg.Flush > 0 && i > from && rec.TS[i]-rec.TS[from] >= int64(cfg.Flush) {
			if e, ok := x.Flush(); ok {
				if err := fn(epoch{from: from, to: i, start: rec.TS[from], closed: rec.TS[i]}, e); err != nil {
					return err
				}
			}
			from = i
		}
		if e, ok := x.Push(nr); ok {
			if err := fn(epoch{from: from, to: i + 1, start: rec.TS[from], closed: rec.TS[i]}, e); err != nil {
				return err
			}
			from = i + 1
		}
	}
	if e, ok := x.Flush(); ok {
		last := len(rec.Calls) - 1
		return fn(epoch{from: from, to: last + 1, start: rec.TS[from], closed: rec.TS[last]}, e)
	}
	return nil
}

// ReplayRecording trains, calibrates and scores one recording whose attack
// started at attackStart (Unix ns): the normal phase is every call before.
func ReplayRecording(ctx context.Context, rec *Recording, attackStart int64, cfg ReplayConfig) (*Replay, error) {
	first := rec.TS[0]
	normal := time.Duration(attackStart - first)
	if normal <= 0 || attackStart > rec.TS[len(rec.TS)-1] {
		return nil, fmt.Errorf("replay: the attack's start is outside the recording (%v after its first call)", normal)
	}
	trainEnd := first + int64(float64(normal)*cfg.TrainShare)
	validEnd := first + int64(float64(normal)*(cfg.TrainShare+cfg.ValidShare))
	rp := &Replay{Calls: len(rec.Calls), TrainSpan: time.Duration(trainEnd - first),
		ValidSpan: time.Duration(validEnd - trainEnd), TestSpan: time.Duration(attackStart - validEnd)}

	boscProf, err := bags.New(bags.WithWindow(cfg.Window), bags.WithEpoch(cfg.Epoch))
	if err != nil {
		return nil, err
	}
	lmProf, err := bags.New(bags.WithWindow(cfg.Window), bags.WithEpoch(cfg.Epoch), bags.WithSequence(true))
	if err != nil {
		return nil, err
	}
	bosc, err := bags.NewScorer(bags.RuleBoSC, boscProf)
	if err != nil {
		return nil, err
	}
	lm, err := bags.NewScorer(bags.RuleLM, lmProf)
	if err != nil {
		return nil, err
	}
	cal, err := bags.NewCalibrator(bags.CalibrationConfig{FalseAlarmsPerDay: cfg.FalseAlarmsPerDay})
	if err != nil {
		return nil, err
	}
	var model *eval.Model
	var scored []epoch // validation, test and attack epochs
	trainCalls := 0
	err = segment(rec, cfg, func(ep epoch, e bags.Epoch) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if ep.start < trainEnd {
			// The daemon's learning: score held out, then learn.
			if e.Windows > 0 {
				cal.Observe(lm.Value(e), time.Unix(0, ep.closed))
			}
			if _, err := lm.Train(e); err != nil {
				return fmt.Errorf("replay: train lm: %w", err)
			}
			if _, err := bosc.Train(e); err != nil {
				return fmt.Errorf("replay: train bosc: %w", err)
			}
			trainCalls = ep.to
			rp.TrainEpochs++
			return nil
		}
		if model == nil {
			m, err := eval.TrainModel(ctx, []eval.Trace{{Name: "train", Family: "normal", Calls: rec.Calls[:trainCalls]}},
				cfg.Window, cfg.Epoch)
			if err != nil {
				return fmt.Errorf("replay: train the eval's model: %w", err)
			}
			model = m
			lm.SetThreshold(cal.Threshold())
		}
		s := model.Score(rec.Calls[ep.from:ep.to])
		ep.scores = [4]float64{lm.Value(e), float64(bosc.Score(e).Mismatches), s.EpochMax, s.Stide}
		scored = append(scored, ep)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if model == nil || cal.Threshold() == 0 {
		return nil, fmt.Errorf("replay: %d training epochs in %v are too few to calibrate (need %d held-out scores): run a longer normal phase",
			rp.TrainEpochs, rp.TrainSpan, 2*cal.Config().MinScores)
	}
	return rp, rp.judge(scored, validEnd, attackStart, lm.Threshold(), cfg)
}

// judge sets the uncalibrated rules' thresholds on the validation epochs at
// the daemon's false-alarm target, then counts false alarms on the test
// epochs and finds each scorer's first alarm in the attack.
func (rp *Replay) judge(scored []epoch, validEnd, attackStart int64, lmThreshold float64, cfg ReplayConfig) error {
	var valid [4][]float64
	for _, ep := range scored {
		switch {
		case ep.start < validEnd:
			rp.ValidEpochs++
			for k := range valid {
				valid[k] = append(valid[k], ep.scores[k])
			}
		case ep.closed < attackStart:
			rp.Tests++
		default:
			rp.AttackEpochs++
		}
	}
	if rp.ValidEpochs < 2 || rp.Tests < 1 || rp.AttackEpochs < 1 {
		return fmt.Errorf("replay: %d validation, %d test and %d attack epochs: each part needs epochs", rp.ValidEpochs, rp.Tests, rp.AttackEpochs)
	}
	perDay := float64(rp.ValidEpochs) / rp.ValidSpan.Seconds() * 86400
	q := min(cfg.FalseAlarmsPerDay/perDay, 0.5)
	for k, name := range scorerNames() {
		r := ScorerResult{Scorer: name, Threshold: lmThreshold}
		if name != scorerLM {
			slices.Sort(valid[k])
			r.Threshold = bags.TailThreshold(valid[k], q)
		}
		for _, ep := range scored {
			over := ep.scores[k] > r.Threshold
			switch {
			case ep.start < validEnd:
			case ep.closed < attackStart:
				if over {
					r.FalseAlarms++
				}
			default:
				r.AttackMax = max(r.AttackMax, ep.scores[k])
				if over && !r.Detected {
					r.Detected, r.Latency = true, time.Duration(ep.closed-attackStart)
				}
			}
		}
		rp.Results = append(rp.Results, r)
	}
	return nil
}
