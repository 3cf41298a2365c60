package bags

import (
	"fmt"
	"math"
	"time"
)

// Defaults of the online-learning guard (OnlineConfig).
const (
	// DefaultQuarantine is how long a clean epoch waits before it may
	// teach: five minutes of the identity's traffic, long enough for the
	// next stage of an attack (the shell after the exploit, the
	// exfiltration after the read) to show as an anomaly and void it.
	DefaultQuarantine = 5 * time.Minute
	// DefaultTeachRate is how many epochs a minute may enter quarantine,
	// hence at most teach: one every 10 s.
	DefaultTeachRate = 6
	// DefaultQuarantineQueue bounds the epochs in quarantine per identity.
	// With the defaults at most 30 + burst are waiting; the bound only
	// bites when rate × quarantine is set above it.
	DefaultQuarantineQueue = 64
)

// OnlineConfig tunes a Guard; zero fields take the defaults.
type OnlineConfig struct {
	// Quarantine is how long an epoch waits, after it was scored, before it
	// may teach the profile.
	Quarantine time.Duration
	// Rate is the token bucket's refill, in epochs per minute: a clean
	// epoch enters quarantine only with a token, so no more than Rate
	// epochs a minute (after a burst of Burst) ever teach.
	Rate float64
	// Burst is the bucket's size (default ⌈Rate⌉, at least 1).
	Burst int
	// Queue bounds the epochs in quarantine: a new one beyond it pushes
	// out the oldest, which is counted (GuardStats.Overflow), never taught.
	Queue int
}

func (c *OnlineConfig) defaults() {
	if c.Quarantine == 0 {
		c.Quarantine = DefaultQuarantine
	}
	if c.Rate == 0 {
		c.Rate = DefaultTeachRate
	}
	if c.Burst == 0 {
		c.Burst = max(1, int(math.Ceil(c.Rate)))
	}
	if c.Queue == 0 {
		c.Queue = DefaultQuarantineQueue
	}
}

// MaxQuarantineQueue caps OnlineConfig.Queue: each entry holds up to one
// epoch's bags and order (about 40 KiB at E = 1000), per identity.
const MaxQuarantineQueue = 4096

// Validate checks the configuration with the defaults filled in.
func (c OnlineConfig) Validate() error {
	c.defaults()
	switch {
	case c.Quarantine < 0:
		return fmt.Errorf("online learning: quarantine %v < 0: %w", c.Quarantine, ErrConfig)
	case !(c.Rate > 0) || math.IsInf(c.Rate, 0):
		return fmt.Errorf("online learning: rate %v epochs a minute: want a finite number > 0: %w", c.Rate, ErrConfig)
	case c.Burst < 1:
		return fmt.Errorf("online learning: burst %d < 1: %w", c.Burst, ErrConfig)
	case c.Queue < 1 || c.Queue > MaxQuarantineQueue:
		return fmt.Errorf("online learning: queue %d not in 1..%d: %w", c.Queue, MaxQuarantineQueue, ErrConfig)
	}
	return nil
}

// GuardStats are a guard's counters.
type GuardStats struct {
	Quarantined int    // epochs waiting now
	Offered     uint64 // clean epochs offered
	Admitted    uint64 // of them, entered quarantine (had a token)
	Limited     uint64 // of them, refused for want of a token
	Taught      uint64 // epochs taught after their quarantine
	TaughtBags  uint64 // bags those epochs added to the database
	Voided      uint64 // epochs dropped from quarantine by an anomaly
	Cooling     uint64 // clean epochs refused for following an anomaly too closely
	Overflow    uint64 // epochs pushed out of a full quarantine
	Anomalies   uint64 // anomalies seen (each voids the quarantine)
}

// Guard is online learning with a poisoning guard, for one identity whose
// learning phase is over. Below-threshold epochs are offered to it; each
// waits in a bounded quarantine and teaches the profile only once
// Quarantine has passed with no anomaly of the identity meanwhile: an
// anomaly voids every epoch still waiting, since the quiet epochs before an
// attack's loud step are most likely its own quiet steps. Symmetrically,
// an epoch scored less than Quarantine after an anomaly is refused: the
// quiet tail of a loud step (the epoch its last calls share with normal
// ones) must not teach the step's bags. A token bucket
// bounds how many epochs a minute may enter quarantine, so a patient
// attacker cannot teach faster than Rate whatever its epoch rate.
//
// Offer copies the epoch into a reused entry of a fixed ring: once the
// entries have grown to the largest epoch, nothing allocates. A Guard is
// not safe for concurrent use; the sensor calls it under its lock.
type Guard struct {
	cfg    OnlineConfig
	ring   []quarantined
	head   int // oldest entry
	n      int // entries in use
	tokens float64
	refill time.Time // when tokens were last refilled
	// lastAnomaly is when the last anomaly was seen (zero: none).
	lastAnomaly time.Time
	stats       GuardStats
}

type quarantined struct {
	at    time.Time
	epoch Epoch
}

// NewGuard checks cfg and returns a guard with a full bucket.
func NewGuard(cfg OnlineConfig) (*Guard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	return &Guard{cfg: cfg, ring: make([]quarantined, cfg.Queue), tokens: float64(cfg.Burst)}, nil
}

// Config returns the guard's configuration with defaults filled in.
func (g *Guard) Config() OnlineConfig { return g.cfg }

// Stats returns the guard's counters.
func (g *Guard) Stats() GuardStats {
	s := g.stats
	s.Quarantined = g.n
	return s
}

func (g *Guard) take(now time.Time) bool {
	switch {
	case g.refill.IsZero():
		g.refill = now
	case now.After(g.refill):
		g.tokens = min(float64(g.cfg.Burst), g.tokens+now.Sub(g.refill).Minutes()*g.cfg.Rate)
		g.refill = now
	}
	if g.tokens < 1 {
		return false
	}
	g.tokens--
	return true
}

// Offer puts a clean epoch scored at now in quarantine, if a token allows;
// it reports whether it did. Anomalous or degraded epochs are refused: they
// never teach.
func (g *Guard) Offer(e Epoch, now time.Time) bool {
	if e.Degraded || e.Windows == 0 {
		return false
	}
	g.stats.Offered++
	if !g.lastAnomaly.IsZero() && now.Sub(g.lastAnomaly) < g.cfg.Quarantine {
		g.stats.Cooling++
		return false
	}
	if !g.take(now) {
		g.stats.Limited++
		return false
	}
	g.stats.Admitted++
	if g.n == len(g.ring) {
		g.head = (g.head + 1) % len(g.ring)
		g.n--
		g.stats.Overflow++
	}
	q := &g.ring[(g.head+g.n)%len(g.ring)]
	q.at = now
	q.epoch.Windows, q.epoch.Degraded = e.Windows, false
	q.epoch.Bags = append(q.epoch.Bags[:0], e.Bags...)
	if e.Order == nil {
		q.epoch.Order = nil
	} else {
		q.epoch.Order = append(q.epoch.Order[:0], e.Order...)
	}
	g.n++
	return true
}

// Anomaly, seen at now, voids every epoch in quarantine and refuses the
// epochs of the next Quarantine; it returns how many it voided.
func (g *Guard) Anomaly(now time.Time) int {
	if g.lastAnomaly.IsZero() || now.After(g.lastAnomaly) {
		g.lastAnomaly = now
	}
	dropped := g.n
	g.stats.Anomalies++
	g.stats.Voided += uint64(dropped)
	g.head, g.n = 0, 0
	return dropped
}

// Release teaches p every epoch whose quarantine is over at now, oldest
// first, and returns how many it taught.
func (g *Guard) Release(now time.Time, p *Profile) (int, error) {
	taught := 0
	for g.n > 0 {
		q := &g.ring[g.head]
		if now.Sub(q.at) < g.cfg.Quarantine {
			break
		}
		added, err := p.Teach(q.epoch)
		if err != nil {
			return taught, fmt.Errorf("online learning: %w", err)
		}
		g.head = (g.head + 1) % len(g.ring)
		g.n--
		taught++
		g.stats.Taught++
		g.stats.TaughtBags += uint64(added)
	}
	return taught, nil
}

// Reset forgets the quarantine and refills the bucket (a retrain).
func (g *Guard) Reset() {
	g.head, g.n = 0, 0
	g.tokens, g.refill, g.lastAnomaly = float64(g.cfg.Burst), time.Time{}, time.Time{}
}

// Teach learns one epoch after the learning phase (online learning): as
// Train, bag frequencies and the sequence model, even once training
// stopped, counted apart (Stats.LearnedOnline: bags added) and not as a
// training epoch. TrainedWindows grows too, since the sequence model's
// unigram level divides the frequencies by it. Degraded epochs teach
// nothing. It returns the bags added.
func (p *Profile) Teach(e Epoch) (int, error) {
	if err := p.checkEpoch(e); err != nil {
		return 0, fmt.Errorf("teach: %w", err)
	}
	if e.Degraded {
		return 0, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	added, _, learned := p.learnLocked(&e)
	p.stats.TrainedWindows += learned
	p.stats.LearnedOnline += uint64(added)
	return added, nil
}
