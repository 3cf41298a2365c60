package bags

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func feed(c *Calibrator, scores []float64, start time.Time, every time.Duration) {
	for i, s := range scores {
		c.Observe(s, start.Add(time.Duration(i)*every))
	}
}

// A stationary score stream: the estimate settles and the test says so.
func TestCalibratorStableStreamEnds(t *testing.T) {
	c, err := NewCalibrator(CalibrationConfig{})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var s []float64
	for range 2000 {
		s = append(s, 1+r.ExpFloat64()*0.2)
	}
	start := time.Unix(1e9, 0)
	feed(c, s[:130], start, time.Second)
	if c.Stable() {
		t.Fatal("stable after 130 scores: the first estimate needs 40 (half are warm-up), then 5 more every 20")
	}
	feed(c, s[130:], start.Add(130*time.Second), time.Second)
	if !c.Stable() {
		t.Fatalf("a stationary stream of %d scores is not stable", c.Seen())
	}
	// One epoch a second: 86,400 a day, q = 1/86400, far below 1/1024:
	// the tail is extrapolated above the largest kept score.
	if got := c.EpochsPerSecond(); math.Abs(got-1) > 0.01 {
		t.Errorf("rate %v epochs/s, want 1", got)
	}
	thr := c.Threshold()
	if kept := slices.Max(s[len(s)-1024:]); thr < kept {
		t.Errorf("threshold %v below the largest kept score %v", thr, kept)
	}
	// Exponential excesses of scale 0.2 over 1: P(X > t) = exp(-(t-1)/0.2),
	// so t(q) = 1 + 0.2 ln(1/q) ≈ 3.27; the estimate is within 25%.
	if want := 1 + 0.2*math.Log(86400); math.Abs(thr-want)/want > 0.25 {
		t.Errorf("threshold %v, want about %v", thr, want)
	}
}

// A drifting stream (the profile meets more and more it has not learned:
// scores climb 1% an epoch) never becomes stable.
func TestCalibratorDriftingStreamContinues(t *testing.T) {
	c, _ := NewCalibrator(CalibrationConfig{})
	start := time.Unix(1e9, 0)
	for i := range 3000 {
		c.Observe(math.Pow(1.01, float64(i))+float64(i%7), start.Add(time.Duration(i)*time.Second))
		if c.Stable() {
			t.Fatalf("drifting stream stable at score %d", i)
		}
	}
}

// A busy container makes q tiny; a slow one makes it large enough for the
// empirical quantile. Same scores, different thresholds.
func TestCalibratorTargetFollowsTheEpochRate(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var s []float64
	for range 2000 {
		s = append(s, r.Float64())
	}
	fast, _ := NewCalibrator(CalibrationConfig{})
	slow, _ := NewCalibrator(CalibrationConfig{FalseAlarmsPerDay: 1000})
	feed(fast, s, time.Unix(1e9, 0), time.Millisecond) // 1000 epochs/s
	feed(slow, s, time.Unix(1e9, 0), time.Minute)      // 1 epoch/min: q = 1000/1440, capped at 0.5
	if q := slow.Target(); q != 0.5 {
		t.Errorf("slow target %v, want the 0.5 cap", q)
	}
	if m := slow.Threshold(); m < 0.4 || m > 0.6 {
		t.Errorf("slow threshold %v: the median of uniform scores", m)
	}
	if q := fast.Target(); math.Abs(q*86400e3-1) > 1e-6 {
		t.Errorf("fast target %v", q)
	}
	if fast.Threshold() < 1 { // never below the largest kept score, ~1
		t.Errorf("fast threshold %v below the kept maximum", fast.Threshold())
	}
}

func TestTailThreshold(t *testing.T) {
	if TailThreshold(nil, 0.1) != 0 {
		t.Error("empty sample")
	}
	flat := make([]float64, 100)
	if got := TailThreshold(flat, 1e-9); got != 0 {
		t.Errorf("all zeros: %v", got)
	}
	var lin []float64
	for i := range 1000 {
		lin = append(lin, float64(i))
	}
	if got := TailThreshold(lin, 0.05); got != 949 {
		t.Errorf("empirical 95th percentile of 0..999: %v", got)
	}
}

func TestCalibratorRejectsBadConfigAndResets(t *testing.T) {
	for _, c := range []CalibrationConfig{{FalseAlarmsPerDay: -1}, {FalseAlarmsPerDay: math.Inf(1)}, {Keep: 1},
		{MinScores: 2000}, {Stable: 1}, {Tolerance: -0.1}} {
		if _, err := NewCalibrator(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v", c, err)
		}
	}
	c, _ := NewCalibrator(CalibrationConfig{})
	feed(c, make([]float64, 500), time.Unix(1e9, 0), time.Second)
	if !c.Stable() {
		t.Fatal("constant stream not stable")
	}
	c.Reset()
	if c.Stable() || c.Seen() != 0 || c.Threshold() != 0 {
		t.Error("reset kept state")
	}
}
