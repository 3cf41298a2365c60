package bags

import (
	"fmt"
	"sync"

	"go.uber.org/zap"
)

// Profile is one workload's normal-behaviour database: bag -> frequency (the
// number of training windows that had the bag). It is safe for concurrent use.
type Profile struct {
	mu      sync.Mutex
	cfg     config
	db      *table
	stats   Stats
	stable  int // consecutive non-empty training epochs without a new bag
	pending []BagCount
	known   *callSet // for Explain; built on first use
	seq     *seqModel
	ids     []uint32 // per bag of the epoch in hand: its id in db, or NoBag
	// rule and limit are the scorer that judges this profile and its
	// threshold in that scorer's unit (Scorer); complete says its learning
	// phase ended. All three persist.
	rule     string
	limit    float64
	complete bool
	legacy   bool // loaded from a version 1 file: Complete is unknown
}

// Stats summarises a profile's history.
type Stats struct {
	Bags            int    // distinct bags stored
	TrainedWindows  uint64 // windows learned in training
	TrainedEpochs   uint64 // non-empty epochs learned in training
	Stopped         bool   // training ended by auto-stop
	LearnedOnline   uint64 // bags committed by online learning
	OverflowBags    uint64 // new bags dropped because of the cap
	OverflowWindows uint64 // windows of those bags
}

// TrainResult is the outcome of training on one epoch.
type TrainResult struct {
	Windows  uint64 // windows of the epoch
	NewBags  int    // bags added to the database
	Overflow int    // new bags dropped because of the cap
	Bags     int    // database size afterwards
	Stopped  bool   // training is (now) over: auto-stop triggered; the epoch was not learned if it already was
	Skipped  bool   // the epoch was degraded and was not learned
}

// Verdict is the outcome of detection on one epoch.
type Verdict struct {
	Windows    uint64  // windows of the epoch
	Mismatches uint64  // windows whose bag is not in the database
	NewBags    int     // distinct unseen bags
	Anomalous  bool    // Mismatches > threshold
	Degraded   bool    // kernel lost data for this epoch
	Learned    int     // bags committed by online learning
	Score      float64 // Mismatches / Windows (0 for an empty epoch)
	// Value is the scorer's own score, compared with its threshold
	// (Scorer): mismatches for RuleBoSC, mean nats for RuleLM. Detect
	// alone leaves it 0.
	Value float64
}

// Clean reports whether the epoch may be treated as normal: neither
// anomalous nor degraded (lost data is never evidence of normality).
func (v Verdict) Clean() bool { return !v.Anomalous && !v.Degraded }

// New returns an empty profile or an error for invalid options.
func New(opts ...Option) (*Profile, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("new profile: %w", err)
	}
	p := &Profile{cfg: cfg, db: newTable(1024), rule: RuleBoSC, limit: float64(cfg.threshold)}
	if cfg.sequence {
		p.seq = newSeqModel()
	}
	return p, nil
}

// NewProfile is New for static configurations: it panics on invalid options,
// like regexp.MustCompile.
func NewProfile(opts ...Option) *Profile {
	p, err := New(opts...)
	if err != nil {
		panic(err)
	}
	return p
}

// Window, EpochLen, Threshold, Arch and Workload report the configuration.
func (p *Profile) Window() int { return p.cfg.window }

// EpochLen is the configured epoch length in calls.
func (p *Profile) EpochLen() int { return p.cfg.epoch }

// Threshold is T.
func (p *Profile) Threshold() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg.threshold
}

// SetThreshold changes T, e.g. after choosing it on validation data.
func (p *Profile) SetThreshold(t uint64) {
	p.mu.Lock()
	p.cfg.threshold = t
	if p.rule == RuleBoSC {
		p.limit = float64(t)
	}
	p.mu.Unlock()
}

// Arch is the syscall-number space of the profile.
func (p *Profile) Arch() string { return p.cfg.arch }

// Workload is the workload name stored with the profile.
func (p *Profile) Workload() string { return p.cfg.workload }

// Stats returns a snapshot of the profile's counters.
func (p *Profile) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Bags = p.db.len()
	return s
}

// Freq returns the training frequency of b and whether b is known.
func (p *Profile) Freq(b Bag) (uint32, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.db.find(hashBag(&b), &b); s != nil {
		return s.val, true
	}
	return 0, false
}

// Range calls fn for every stored bag until fn returns false. The profile is
// locked meanwhile; fn must not call back into it.
func (p *Profile) Range(fn func(Bag, uint32) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.db.each(func(s *slot) bool { return fn(s.bag, s.val) })
}

func (p *Profile) checkEpoch(e Epoch) error {
	for i := range e.Bags {
		if n := e.Bags[i].Bag.Len(); n != p.cfg.window || !e.Bags[i].Bag.valid() {
			return fmt.Errorf("epoch bag %d has %d calls or is not canonical, profile window is %d: %w",
				i, n, p.cfg.window, ErrConfig)
		}
	}
	return nil
}

// Train learns one epoch: a known bag's frequency rises by its window count,
// a new bag enters with its window count (per window: +1, or 1 when new).
// Degraded epochs are skipped, and nothing is learned once auto-stop fired.
func (p *Profile) Train(e Epoch) (TrainResult, error) {
	if err := p.checkEpoch(e); err != nil {
		return TrainResult{}, fmt.Errorf("train: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	res := TrainResult{Windows: e.Windows}
	if p.stats.Stopped {
		res.Stopped, res.Bags = true, p.db.len()
		return res, nil
	}
	if e.Degraded {
		res.Skipped, res.Bags = true, p.db.len()
		p.cfg.log.Debug("skipping degraded epoch in training", zap.String("workload", p.cfg.workload))
		return res, nil
	}
	var learned uint64
	res.NewBags, res.Overflow, learned = p.learnLocked(&e)
	res.Bags = p.db.len()
	if learned == 0 {
		return res, nil // an empty epoch says nothing about convergence
	}
	p.stats.TrainedWindows += learned
	p.stats.TrainedEpochs++
	if res.NewBags == 0 && res.Overflow == 0 {
		p.stable++
	} else {
		p.stable = 0
	}
	if p.cfg.autoStop > 0 && p.stable >= p.cfg.autoStop {
		p.stats.Stopped = true
		res.Stopped = true
		p.cfg.log.Info("training converged: database unchanged",
			zap.String("workload", p.cfg.workload), zap.Int("bags", p.db.len()),
			zap.Int("stable_epochs", p.stable))
	}
	return res, nil
}

// learnLocked adds e's bags to the database (a known bag's frequency rises
// by its window count, a new one enters with it, unless the cap is reached)
// and its bag sequence to the sequence model. It returns the bags added,
// those dropped by the cap and the windows learned.
func (p *Profile) learnLocked(e *Epoch) (added, overflow int, learned uint64) {
	p.ids = p.ids[:0]
	for _, bc := range e.Bags {
		p.ids = append(p.ids, NoBag)
		if bc.Count == 0 {
			continue
		}
		learned += uint64(bc.Count)
		h := hashBag(&bc.Bag)
		if s := p.db.find(h, &bc.Bag); s != nil {
			s.val = satAdd(s.val, bc.Count)
			p.ids[len(p.ids)-1] = s.idx
			continue
		}
		if p.db.len() >= p.cfg.maxBags {
			overflow++
			p.stats.OverflowBags++
			p.stats.OverflowWindows += uint64(bc.Count)
			continue
		}
		s, _ := p.db.upsert(h, &bc.Bag)
		s.val = bc.Count
		p.ids[len(p.ids)-1] = s.idx
		added++
	}
	if p.seq != nil {
		p.seq.learn(e.Order, p.ids, p.cfg.maxBags)
	}
	return added, overflow, learned
}

// Detect scores one epoch against the database. Bags of the wrong window
// size can never match and count as mismatches.
func (p *Profile) Detect(e Epoch) Verdict {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := Verdict{Windows: e.Windows, Degraded: e.Degraded}
	p.pending = p.pending[:0]
	for _, bc := range e.Bags {
		if bc.Count == 0 {
			continue
		}
		if p.db.find(hashBag(&bc.Bag), &bc.Bag) != nil {
			continue
		}
		v.Mismatches += uint64(bc.Count)
		v.NewBags++
		if p.cfg.online && bc.Bag.Len() == p.cfg.window && bc.Bag.valid() {
			p.pending = append(p.pending, bc)
		}
	}
	v.Anomalous = v.Mismatches > p.cfg.threshold
	if e.Windows > 0 {
		v.Score = float64(v.Mismatches) / float64(e.Windows)
	}
	if p.cfg.online && !v.Anomalous && !v.Degraded {
		for _, bc := range p.pending {
			if p.db.len() >= p.cfg.maxBags {
				p.stats.OverflowBags++
				p.stats.OverflowWindows += uint64(bc.Count)
				continue
			}
			s, inserted := p.db.upsert(hashBag(&bc.Bag), &bc.Bag)
			if inserted {
				s.val = bc.Count
				v.Learned++
			}
		}
		p.stats.LearnedOnline += uint64(v.Learned)
	}
	return v
}

func satAdd(a, b uint32) uint32 {
	if s := a + b; s >= a {
		return s
	}
	return ^uint32(0)
}
