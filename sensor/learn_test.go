package sensor_test

import (
	"testing"
	"time"

	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/events"
	"github.com/escape-mtd/escape/sensor/internal/cgtest"
)

// A learning time keeps a profile learning after its epochs are done: with
// one epoch to learn and 2 s to learn for, a burst of epochs all train, and
// detection starts after the first epoch scored past the 2 s.
func TestMonitorLearnsForAtLeastTheLearningTime(t *testing.T) {
	cgtest.Root(t)
	const learnFor = 2 * time.Second
	ctx, mon, _, out := startMonitor(t, sensor.WithLearnEpochs(1), sensor.WithLearnFor(learnFor))
	cg := cgtest.New(t)
	if err := mon.Add(ctx, sensor.Container{ID: "c1", Namespace: "test", CgroupPath: cg.Leaf}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cg.Run(t, known, 60) // 541 calls: epochs 1-5
	waitFor(t, func() bool { return len(epochsOf(t, out)) >= 5 })
	if took := time.Since(start); took >= learnFor {
		t.Fatalf("the first burst took %v, not under the learning time %v: the test cannot tell", took, learnFor)
	}
	time.Sleep(learnFor - time.Since(start) + 100*time.Millisecond)
	cg.Run(t, known, 60) // epochs 6-10
	waitFor(t, func() bool { return len(epochsOf(t, out)) >= 10 })

	// Learning, then detection: learning ends with the first epoch the
	// monitor scores past the learning time (epoch 5 or 6, as the ring
	// delivers the first burst's last epoch before or after the pause).
	eps := epochsOf(t, out)
	learning := 0
	for learning < len(eps) && eps[learning].Epoch.Mode == sensor.StateLearning {
		learning++
	}
	if learning < 4 || learning == len(eps) {
		t.Fatalf("%d of %d epochs learning; want the first burst's 4 or more with learn_epochs 1, then detection", learning, len(eps))
	}
	first, last := eps[0].Time, eps[learning-1].Time
	const slack = 50 * time.Millisecond // event times trail the monitor's clock
	if d := last.Sub(first); d < learnFor-slack {
		t.Errorf("learning ended %v after it began, before the learning time %v", d, learnFor)
	}
	if d := eps[learning-2].Time.Sub(first); d >= learnFor+slack {
		t.Errorf("an epoch %v after learning began, past the learning time, was still trained", d)
	}
	for _, e := range eps[learning:] {
		if e.Epoch.Mode != "detecting" || e.Epoch.Mismatches > e.Epoch.Threshold {
			t.Errorf("epoch %d after learning: mode %q, %d mismatches", e.Epoch.Seq, e.Epoch.Mode, e.Epoch.Mismatches)
		}
	}
}

func TestMonitorRejectsANegativeLearningTime(t *testing.T) {
	if _, err := sensor.NewMonitor(nil, nil, sensor.WithLearnFor(-time.Second)); err == nil {
		t.Fatal("a negative learning time was accepted")
	}
}

// epochsOf returns the epoch summaries and anomalies seen so far, in order.
func epochsOf(t *testing.T, out *syncBuf) []events.Event {
	var eps []events.Event
	for _, e := range out.events(t) {
		if e.Epoch != nil && (e.Type == events.TypeEpoch || e.Type == events.TypeAnomaly) {
			eps = append(eps, e)
		}
	}
	return eps
}
