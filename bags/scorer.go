package bags

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Scoring rules selectable per container.
const (
	// RuleBoSC is the papers' rule: an epoch's score is its number of
	// windows with an unseen bag, anomalous above T.
	RuleBoSC = "bosc"
	// RuleLM is the smoothed sequence model of the windows' bags: an
	// epoch's score is the mean surprise −ln S(bag | two previous bags)
	// in nats (stupid backoff to the bag frequencies, seqModel.surprise).
	RuleLM = "lm"
)

// Rules lists the scoring rules, the papers' first.
func Rules() []string { return []string{RuleBoSC, RuleLM} }

// ParseRule checks a rule name (case and spaces ignored).
func ParseRule(name string) (string, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if !slices.Contains(Rules(), n) {
		return "", fmt.Errorf("scorer %q: want one of %s: %w", name, strings.Join(Rules(), ", "), ErrConfig)
	}
	return n, nil
}

// RuleNeedsSequence says whether a rule needs the profile's sequence model
// (WithSequence).
func RuleNeedsSequence(rule string) bool { return rule == RuleLM }

// Scorer is one scoring rule over a profile: it learns epochs, scores them
// and compares the score with its threshold, in the rule's own unit
// (mismatching windows for RuleBoSC, nats for RuleLM). Score never
// allocates once the profile has seen an epoch as large; it learns nothing
// unless the profile's online learning is on (RuleBoSC only).
type Scorer interface {
	Rule() string
	Profile() *Profile
	Train(Epoch) (TrainResult, error)
	Score(Epoch) Verdict
	// Value is the rule's score alone, without online learning or any
	// other side effect: the calibration's held-out score.
	Value(Epoch) float64
	Threshold() float64
	SetThreshold(float64)
}

// NewScorer returns rule's scorer over p and records the rule in p, so that
// it persists with the profile. RuleLM needs a profile with a sequence model.
func NewScorer(rule string, p *Profile) (Scorer, error) {
	rule, err := ParseRule(rule)
	if err != nil {
		return nil, err
	}
	if RuleNeedsSequence(rule) && p.seq == nil {
		return nil, fmt.Errorf("scorer %s: the profile has no sequence model (WithSequence): %w", rule, ErrConfig)
	}
	p.mu.Lock()
	if p.rule != rule {
		// The other rule's threshold means nothing in this one's unit.
		p.rule, p.limit = rule, defaultLimit(rule, p.cfg.threshold)
	}
	p.mu.Unlock()
	if rule == RuleLM {
		return lmScorer{p}, nil
	}
	return boscScorer{p}, nil
}

// DefaultLMThreshold is the sequence model's threshold before calibration:
// a mean surprise of 10 nats is an epoch about as odd, window for window, as
// one whose bags appear once in 20,000 training windows.
const DefaultLMThreshold = 10

func defaultLimit(rule string, t uint64) float64 {
	if rule == RuleLM {
		return DefaultLMThreshold
	}
	return float64(t)
}

// Rule is the scorer recorded in the profile (RuleBoSC for a profile that
// never had another).
func (p *Profile) Rule() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rule
}

// Complete reports whether the profile's learning phase ended (persisted).
func (p *Profile) Complete() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.complete
}

// Legacy reports a profile loaded from a version 1 file, which does not
// record whether its learning ended (Complete is then false).
func (p *Profile) Legacy() bool { return p.legacy }

// SetComplete records the end (or, false, a restart) of the learning phase.
func (p *Profile) SetComplete(done bool) {
	p.mu.Lock()
	p.complete = done
	p.mu.Unlock()
}

type boscScorer struct{ p *Profile }

func (s boscScorer) Rule() string                       { return RuleBoSC }
func (s boscScorer) Profile() *Profile                  { return s.p }
func (s boscScorer) Train(e Epoch) (TrainResult, error) { return s.p.Train(e) }
func (s boscScorer) Threshold() float64                 { return float64(s.p.Threshold()) }

// SetThreshold sets T to ⌊t⌋: mismatch counts are integers, so count > ⌊t⌋
// exactly when count > t.
func (s boscScorer) SetThreshold(t float64) {
	s.p.mu.Lock()
	s.p.cfg.threshold = uint64(math.Floor(max(t, 0)))
	s.p.limit = float64(s.p.cfg.threshold)
	s.p.mu.Unlock()
}

func (s boscScorer) Score(e Epoch) Verdict {
	v := s.p.Detect(e)
	v.Value = float64(v.Mismatches)
	return v
}

func (s boscScorer) Value(e Epoch) float64 {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	var miss uint64
	for i := range e.Bags {
		bc := &e.Bags[i]
		if bc.Count > 0 && s.p.db.find(hashBag(&bc.Bag), &bc.Bag) == nil {
			miss += uint64(bc.Count)
		}
	}
	return float64(miss)
}

type lmScorer struct{ p *Profile }

func (s lmScorer) Rule() string                       { return RuleLM }
func (s lmScorer) Profile() *Profile                  { return s.p }
func (s lmScorer) Train(e Epoch) (TrainResult, error) { return s.p.Train(e) }

func (s lmScorer) Threshold() float64 {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	return s.p.limit
}

func (s lmScorer) SetThreshold(t float64) {
	s.p.mu.Lock()
	s.p.limit = max(t, 0)
	s.p.mu.Unlock()
}

func (s lmScorer) Score(e Epoch) Verdict {
	p := s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	v := Verdict{Windows: e.Windows, Degraded: e.Degraded}
	v.Mismatches, v.NewBags = p.resolveLocked(&e)
	v.Value, _ = p.seq.surprise(&e, p.ids, p.db, p.stats.TrainedWindows)
	v.Anomalous = v.Value > p.limit
	if e.Windows > 0 {
		v.Score = float64(v.Mismatches) / float64(e.Windows)
	}
	return v
}

func (s lmScorer) Value(e Epoch) float64 {
	p := s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resolveLocked(&e)
	v, _ := p.seq.surprise(&e, p.ids, p.db, p.stats.TrainedWindows)
	return v
}

// resolveLocked fills p.ids with the id of each of e's bags (NoBag when
// unseen) and counts the unseen windows and bags.
func (p *Profile) resolveLocked(e *Epoch) (mismatches uint64, newBags int) {
	p.ids = p.ids[:0]
	for i := range e.Bags {
		bc := &e.Bags[i]
		id := NoBag
		if s := p.db.find(hashBag(&bc.Bag), &bc.Bag); s != nil {
			id = s.idx
		} else if bc.Count > 0 {
			mismatches += uint64(bc.Count)
			newBags++
		}
		p.ids = append(p.ids, id)
	}
	return mismatches, newBags
}
