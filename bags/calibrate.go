package bags

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// DefaultFalseAlarmsPerDay is the calibration's target: one false alarm per
// 24 hours of a container's epochs.
const DefaultFalseAlarmsPerDay = 1

// Calibrator chooses one identity's threshold from its own learning phase
// and says when that phase has shown enough.
//
// It is fed held-out scores: each learned epoch scored by the profile as it
// was before the epoch was learned (score, then train), so no score comes
// from a profile trained on its own epoch. The first half of the epochs seen
// is warm-up (a young profile finds everything new) and is never used; the
// estimate uses the most recent min(Keep, seen/2) scores.
//
// The threshold is the score the identity's normal epochs exceed with
// probability q = false alarms per day / epochs per day, the epoch rate being
// the one measured while learning. When the kept scores are enough for the
// empirical quantile (q·n ≥ 10) it is that quantile; otherwise the tail is
// extrapolated by peaks over threshold with an exponential tail (a
// generalised Pareto tail of shape 0): u = the score below the top k = max(10,
// n/10), β = the mean excess of the top k over u, threshold = u + β·ln((k/n)/q).
// It is never below the largest score kept: the learning phase itself never
// alarms.
//
// Stability: every Every scores, once MinScores are usable, the estimate is
// recorded; the scores are stable when the last Stable estimates lie within
// Tolerance (relative) of each other. With the defaults: the threshold
// estimate moved less than 10% over the last 100 epochs.
type Calibrator struct {
	cfg    CalibrationConfig
	ring   []float64
	next   int
	seen   uint64
	est    []float64 // last estimates, oldest first
	sorted []float64 // scratch
	first  time.Time
	last   time.Time
}

// CalibrationConfig tunes a Calibrator; zero fields take the defaults.
type CalibrationConfig struct {
	FalseAlarmsPerDay float64 // target (default DefaultFalseAlarmsPerDay)
	Keep              int     // held-out scores kept (default 1024)
	MinScores         int     // usable scores before any estimate (default 20)
	Every             int     // scores between two estimates (default 20)
	Stable            int     // estimates that must agree (default 6: they span 100 epochs)
	Tolerance         float64 // their relative spread (default 0.1)
}

func (c *CalibrationConfig) defaults() {
	if c.FalseAlarmsPerDay == 0 {
		c.FalseAlarmsPerDay = DefaultFalseAlarmsPerDay
	}
	if c.Keep == 0 {
		c.Keep = 1024
	}
	if c.MinScores == 0 {
		c.MinScores = 20
	}
	if c.Every == 0 {
		c.Every = 20
	}
	if c.Stable == 0 {
		c.Stable = 6
	}
	if c.Tolerance == 0 {
		c.Tolerance = 0.1
	}
}

// NewCalibrator checks cfg and returns an empty calibrator.
func NewCalibrator(cfg CalibrationConfig) (*Calibrator, error) {
	cfg.defaults()
	switch {
	case !(cfg.FalseAlarmsPerDay > 0) || math.IsInf(cfg.FalseAlarmsPerDay, 0):
		return nil, fmt.Errorf("calibration: false alarms per day %v: want > 0: %w", cfg.FalseAlarmsPerDay, ErrConfig)
	case cfg.Keep < 2 || cfg.MinScores < 2 || cfg.MinScores > cfg.Keep || cfg.Every < 1 || cfg.Stable < 2:
		return nil, fmt.Errorf("calibration: keep %d, min scores %d, every %d, stable %d: %w",
			cfg.Keep, cfg.MinScores, cfg.Every, cfg.Stable, ErrConfig)
	case !(cfg.Tolerance > 0):
		return nil, fmt.Errorf("calibration: tolerance %v: want > 0: %w", cfg.Tolerance, ErrConfig)
	}
	return &Calibrator{cfg: cfg, ring: make([]float64, 0, cfg.Keep), sorted: make([]float64, 0, cfg.Keep),
		est: make([]float64, 0, cfg.Stable)}, nil
}

// Config returns the calibrator's configuration with defaults filled in.
func (c *Calibrator) Config() CalibrationConfig { return c.cfg }

// Observe adds the held-out score of an epoch learned at time at.
func (c *Calibrator) Observe(score float64, at time.Time) {
	if math.IsNaN(score) {
		return
	}
	if c.first.IsZero() {
		c.first = at
	}
	c.last = at
	if len(c.ring) < c.cfg.Keep {
		c.ring = append(c.ring, score)
	} else {
		c.ring[c.next] = score
	}
	c.next = (c.next + 1) % c.cfg.Keep
	c.seen++
	if c.usable() >= c.cfg.MinScores && c.seen%uint64(c.cfg.Every) == 0 {
		t := c.Threshold()
		if len(c.est) == c.cfg.Stable {
			copy(c.est, c.est[1:])
			c.est = c.est[:len(c.est)-1]
		}
		c.est = append(c.est, t)
	}
}

// Seen is the number of scores observed.
func (c *Calibrator) Seen() uint64 { return c.seen }

func (c *Calibrator) usable() int { return min(len(c.ring), int(c.seen/2)) }

// EpochsPerSecond is the epoch rate of the learning phase so far: the
// intervals between its epochs over the time from the first to the last (at
// least one second).
func (c *Calibrator) EpochsPerSecond() float64 {
	span := max(c.last.Sub(c.first), time.Second)
	return float64(max(c.seen, 2)-1) / span.Seconds()
}

// Target is the per-epoch false-alarm probability q at the current rate.
func (c *Calibrator) Target() float64 {
	perDay := c.EpochsPerSecond() * 86400
	return min(c.cfg.FalseAlarmsPerDay/perDay, 0.5)
}

// Threshold is the current estimate (0 before MinScores are usable).
func (c *Calibrator) Threshold() float64 {
	n := c.usable()
	if n < c.cfg.MinScores {
		return 0
	}
	c.sorted = c.sorted[:0]
	// The n most recent scores: the ring's last n writes.
	for i := 1; i <= n; i++ {
		c.sorted = append(c.sorted, c.ring[(c.next-i+len(c.ring))%len(c.ring)])
	}
	slices.Sort(c.sorted)
	return TailThreshold(c.sorted, c.Target())
}

// TailThreshold is the score that a sample's distribution exceeds with
// probability q, from sorted (ascending): the empirical quantile when q·n ≥
// 10, else the exponential peaks-over-threshold extrapolation (see
// Calibrator), never below the sample's maximum.
func TailThreshold(sorted []float64, q float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	top := sorted[n-1]
	if q*float64(n) >= 10 {
		i := int(math.Ceil((1-q)*float64(n))) - 1
		return sorted[min(max(i, 0), n-1)]
	}
	k := min(max(10, n/10), n-1)
	if k < 1 {
		return top
	}
	u := sorted[n-k-1]
	var excess float64
	for _, x := range sorted[n-k:] {
		excess += x - u
	}
	beta := excess / float64(k)
	t := u + beta*math.Log(float64(k)/float64(n)/q)
	return max(t, top)
}

// Stable reports whether the last Stable estimates agree within Tolerance.
func (c *Calibrator) Stable() bool {
	if len(c.est) < c.cfg.Stable {
		return false
	}
	lo, hi := slices.Min(c.est), slices.Max(c.est)
	return hi-lo <= c.cfg.Tolerance*max(math.Abs(hi), math.Abs(lo), 1e-9)
}

// Reset forgets every score (a retrain).
func (c *Calibrator) Reset() {
	c.ring, c.next, c.seen, c.est = c.ring[:0], 0, 0, c.est[:0]
	c.first, c.last = time.Time{}, time.Time{}
}
