package sensor

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/escape-mtd/escape/bags"
	"go.uber.org/zap"
)

// ScorerLabel picks a container's scoring rule (bags.Rules), overriding the
// daemon's default: escape.scorer=bosc|lm. Like IdentityLabel it is the
// sensor's, outside the plane's policy prefix escape.mtd/ (whose unknown
// keys the plane refuses).
const ScorerLabel = "escape.scorer"

// DefaultLearnMax is the ceiling of a calibrated learning phase.
const DefaultLearnMax = 10 * time.Minute

// ErrUnknownIdentity reports a retrain of an identity the monitor does not
// know.
var ErrUnknownIdentity = errors.New("unknown identity")

// ruleOf is the scoring rule of container c: its label, else the default.
func (m *Monitor) ruleOf(c Container) (string, error) {
	v, ok := c.Labels[ScorerLabel]
	if !ok {
		return m.cfg.rule, nil
	}
	rule, err := bags.ParseRule(v)
	if err != nil {
		return "", fmt.Errorf("label %s: %w", ScorerLabel, err)
	}
	return rule, nil
}

func (m *Monitor) profileOptions(id, rule string) []bags.Option {
	return []bags.Option{bags.WithWindow(m.probe.Window()), bags.WithEpoch(m.probe.Epoch()),
		bags.WithWorkload(id), bags.WithLogger(m.log), bags.WithSequence(bags.RuleNeedsSequence(rule))}
}

func (m *Monitor) trackedLocked(c Container) (*tracked, error) {
	id := c.Identity()
	if t, ok := m.profiles[id]; ok {
		return t, nil
	}
	rule, err := m.ruleOf(c)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	guard, err := m.guardFor(c)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	t := &tracked{identity: id, last: c, guard: guard}
	opts := m.profileOptions(id, rule)
	if path := m.profilePath(id); path != "" {
		p, err := bags.LoadFile(path, opts[:len(opts)-1]...) // the file says whether it has a sequence model
		switch {
		case err == nil && p.Window() != m.probe.Window():
			return nil, fmt.Errorf("profile %s has window %d, sensor %d", path, p.Window(), m.probe.Window())
		case err == nil && p.Rule() != rule:
			// Its threshold, and perhaps its data, are another rule's:
			// the identity learns afresh under the rule asked for.
			m.log.Warn("profile was learned for another scorer: learning anew", zap.String("identity", id),
				zap.String("profile_scorer", p.Rule()), zap.String("scorer", rule))
		case err == nil:
			t.profile = p
			t.learned = int(p.Stats().TrainedEpochs)
			// A version 1 file does not record the end of learning: one
			// that has its epochs is taken as trained. A later one saved
			// mid-learning learns on, its calibration and learn_for anew.
			t.trained = p.Complete() || (p.Legacy() && t.learned >= m.cfg.learnEpochs)
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("load profile of %s: %w", id, err)
		}
	}
	if t.profile == nil {
		p, err := bags.New(opts...)
		if err != nil {
			return nil, fmt.Errorf("new profile of %s: %w", id, err)
		}
		t.profile = p
	}
	if t.scorer, err = bags.NewScorer(rule, t.profile); err != nil {
		return nil, fmt.Errorf("scorer of %s: %w", id, err)
	}
	switch {
	case m.cfg.thresholdOn:
		t.scorer.SetThreshold(m.cfg.threshold)
	case m.cfg.calibrating() && !t.trained:
		t.cal, _ = bags.NewCalibrator(m.cfg.calibration) // checked in NewMonitor
	}
	t.state = m.modeLocked(t)
	m.profiles[id] = t
	return t, nil
}

func (m *Monitor) modeLocked(t *tracked) string {
	if !t.trained {
		return StateLearning
	}
	return StateWatching
}

// learnEpochLocked trains t on one clean epoch seen at now: with a
// calibrator, the epoch is first scored by the profile as it stands (a
// held-out score), then learned.
func (m *Monitor) learnEpochLocked(t *tracked, e bags.Epoch, now time.Time) (bags.TrainResult, error) {
	var held float64
	score := t.cal != nil && !e.Degraded && e.Windows > 0
	if score {
		held = t.scorer.Value(e)
	}
	res, err := t.scorer.Train(e)
	if err != nil || res.Skipped || e.Windows == 0 {
		return res, err
	}
	if score {
		t.cal.Observe(held, now)
	}
	m.learnedEpoch(t, now)
	return res, nil
}

// learnedEpoch counts a trained epoch seen at now and ends learning once the
// floor (epochs and learn_for) is done and, when calibrating, the held-out
// scores are stable, or the ceiling learn_max is reached.
func (m *Monitor) learnedEpoch(t *tracked, now time.Time) {
	if t.learnSince.IsZero() {
		t.learnSince = now
	}
	t.learned++
	elapsed := now.Sub(t.learnSince)
	stable := t.cal != nil && t.cal.Stable()
	done, forced := learningEnds(t.learned, elapsed, m.cfg.learnEpochs, m.cfg.learnFor, m.cfg.learnMax, t.cal != nil, stable)
	if !done {
		return
	}
	if t.cal == nil {
		t.trained = true
		t.profile.SetComplete(true)
		return
	}
	thr := t.cal.Threshold()
	t.scorer.SetThreshold(thr)
	t.trained = true
	t.profile.SetComplete(true)
	fields := []zap.Field{zap.String("identity", t.identity), zap.String("scorer", t.scorer.Rule()),
		zap.Float64("threshold", t.scorer.Threshold()), zap.Int("epochs", t.learned), zap.Duration("learned_for", elapsed),
		zap.Float64("epochs_per_second", t.cal.EpochsPerSecond()), zap.Float64("false_alarm_per_epoch", t.cal.Target())}
	if !forced {
		m.log.Info("learning done: held-out scores stable, threshold calibrated", fields...)
	} else {
		m.log.Warn("learning ceiling reached with held-out scores still moving: threshold calibrated on what there is",
			append(fields, zap.Duration("learn_max", m.cfg.learnMax))...)
	}
	t.cal = nil
}

// learningEnds decides the end of a learning phase after learned epochs
// over elapsed time. The floor is epochs and learnFor; past it, a phase that
// calibrates ends when its held-out scores are stable, or at the ceiling
// learnMax anyway (forced), and one that does not ends at the floor.
func learningEnds(learned int, elapsed time.Duration, epochs int, learnFor, learnMax time.Duration,
	calibrating, stable bool) (done, forced bool) {
	if learned < epochs || elapsed < learnFor {
		return false, false
	}
	switch {
	case !calibrating || stable:
		return true, false
	case elapsed >= learnMax:
		return true, true
	}
	return false, false
}

// Retrain drops identity's profile and learns it again from its next epoch,
// calibrating its threshold anew (unless the operator set one): after a
// release or a configuration change. The profile file is replaced at the
// next save.
func (m *Monitor) Retrain(identity string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	identity = strings.TrimSpace(identity)
	t, ok := m.profiles[identity]
	if !ok {
		return fmt.Errorf("retrain %q: %w", identity, ErrUnknownIdentity)
	}
	rule := t.scorer.Rule()
	p, err := bags.New(m.profileOptions(identity, rule)...)
	if err != nil {
		return fmt.Errorf("retrain %s: %w", identity, err)
	}
	sc, err := bags.NewScorer(rule, p)
	if err != nil {
		return fmt.Errorf("retrain %s: %w", identity, err)
	}
	t.profile, t.scorer, t.cal = p, sc, nil
	switch {
	case m.cfg.thresholdOn:
		sc.SetThreshold(m.cfg.threshold)
	case m.cfg.calibrating():
		t.cal, _ = bags.NewCalibrator(m.cfg.calibration)
	}
	t.learned, t.learnSince, t.trained = 0, time.Time{}, false
	if t.guard != nil {
		t.guard.Reset() // what waits was scored by the old profile
	}
	t.taughtUnsaved = false
	if t.state != StateGone {
		t.state = StateLearning
	}
	m.log.Info("retraining", zap.String("identity", identity), zap.String("scorer", rule))
	return nil
}
