package sensor

import (
	"testing"
	"time"

	"github.com/escape-mtd/escape/bags"
)

// The end of learning over synthetic held-out score streams: the floor
// (epochs and learn_for) always holds, stable scores end it, moving ones
// keep it going until the ceiling, which ends it forced.
func TestLearningEndsOnEvidenceWithinFloorAndCeiling(t *testing.T) {
	const (
		floorEpochs = 50
		learnFor    = 3 * time.Minute
		learnMax    = 10 * time.Minute
	)
	run := func(score func(i int) float64) (endedAt int, forced bool) {
		cal, err := bags.NewCalibrator(bags.CalibrationConfig{})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Unix(1e9, 0)
		for i := 1; i <= 2000; i++ { // one epoch a second
			now := start.Add(time.Duration(i) * time.Second)
			cal.Observe(score(i), now)
			if done, f := learningEnds(i, now.Sub(start), floorEpochs, learnFor, learnMax, true, cal.Stable()); done {
				return i, f
			}
		}
		return -1, false
	}
	// Constant scores are stable once the calibrator has its estimates
	// (140 epochs with the defaults): the floor (180 s here, past the 50
	// epochs) decides.
	if at, forced := run(func(int) float64 { return 0.5 }); at != 180 || forced {
		t.Errorf("stable stream ended at epoch %d (forced %v), want at the learn_for floor, 180", at, forced)
	}
	// Scores that climb for 300 epochs, then settle: the end follows the
	// evidence, after the floor and before the ceiling.
	if at, forced := run(func(i int) float64 { return float64(min(i, 300)) }); at <= 300 || at >= 600 || forced {
		t.Errorf("stream settling at 300 ended at %d (forced %v)", at, forced)
	}
	// Scores that never settle: the ceiling ends it, forced.
	if at, forced := run(func(i int) float64 { return float64(i) }); at != 600 || !forced {
		t.Errorf("moving stream ended at %d (forced %v), want the 600 s ceiling, forced", at, forced)
	}
	// Without calibration the floor alone ends learning.
	if done, forced := learningEnds(floorEpochs, learnFor, floorEpochs, learnFor, learnMax, false, false); !done || forced {
		t.Error("uncalibrated learning did not end at its floor")
	}
	if done, _ := learningEnds(floorEpochs-1, learnMax, floorEpochs, learnFor, learnMax, true, true); done {
		t.Error("learning ended below the epoch floor")
	}
}
