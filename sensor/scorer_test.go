package sensor_test

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/control"
	"github.com/escape-mtd/escape/sensor/events"
	"github.com/escape-mtd/escape/sensor/internal/cgtest"
)

// A container learns under the lm scorer (chosen by its label) until its
// held-out scores are stable, gets a calibrated threshold, stays quiet on
// more of its normal workload, and is flagged when the same system calls
// come in another order: every window bag is known (the papers' rule counts
// no mismatch), the sequence of bags is not. Then one command over the
// control socket makes it learn again.
func TestMonitorCalibratedLMFlagsAnUnusualWorkload(t *testing.T) {
	cgtest.Root(t)
	ctx, mon, _, out := startMonitorWith(t, sensor.WithLearnEpochs(40), sensor.WithLearnMax(time.Minute),
		sensor.WithCalibration(bags.CalibrationConfig{FalseAlarmsPerDay: 1}))
	cg := cgtest.New(t)
	ctr := sensor.Container{ID: "c1", Namespace: "test", CgroupPath: cg.Leaf,
		Labels: map[string]string{sensor.ScorerLabel: "lm"}}
	if err := mon.Add(ctx, ctr); err != nil {
		t.Fatal(err)
	}
	row := func() sensor.Row { return rowOf(t, mon, "test/c1") }
	// Normal: processes that each run the 9-call loop 100 times (9
	// epochs of 100 calls), until learning is over.
	runs := 0
	for ; row().State == sensor.StateLearning; runs++ {
		if runs == 60 {
			t.Fatalf("still learning after %d runs, %d epochs", runs, row().Learned)
		}
		cg.Run(t, known, 100)
		time.Sleep(20 * time.Millisecond) // the epochs of the run reach the monitor
	}
	r := row()
	if r.Scorer != bags.RuleLM || r.Learned < 40 || !(r.Threshold > 0) {
		t.Fatalf("after learning: %+v", r)
	}
	t.Logf("learned %d epochs in %d runs; calibrated lm threshold %.3f nats", r.Learned, runs, r.Threshold)
	learned := len(epochsOf(t, out))

	for range 5 {
		cg.Run(t, known, 100)
	}
	waitFor(t, func() bool { return len(epochsOf(t, out)) >= learned+45 })
	detecting := 0
	for _, e := range epochsOf(t, out)[learned:] {
		if e.Epoch.Mode != "detecting" {
			continue
		}
		detecting++
		if e.Type == events.TypeAnomaly || e.Epoch.Scorer != bags.RuleLM || !e.Epoch.Calibrated ||
			e.Epoch.Limit != r.Threshold || e.Epoch.Value > e.Epoch.Limit {
			t.Errorf("normal epoch %d after learning: %s, %+v", e.Epoch.Seq, e.Type, *e.Epoch)
		}
	}
	if detecting < 40 {
		t.Fatalf("%d detecting epochs of the normal workload", detecting)
	}

	// The unusual workload: the same calls, reversed.
	unusual := slices.Clone(known)
	slices.Reverse(unusual)
	before := len(epochsOf(t, out))
	cg.Run(t, unusual, 100)
	waitFor(t, func() bool { return len(epochsOf(t, out)) >= before+9 })
	flagged, blind := 0, 0
	for _, e := range epochsOf(t, out)[before:] {
		if e.Type != events.TypeAnomaly {
			continue
		}
		flagged++
		if e.Epoch.Scorer != bags.RuleLM || !(e.Epoch.Value > e.Epoch.Limit) || e.Epoch.Limit != r.Threshold {
			t.Errorf("anomaly %+v", *e.Epoch)
		}
		if e.Epoch.Mismatches == 0 {
			blind++ // every bag known: the papers' rule would have passed it
		}
	}
	t.Logf("reversed loop: %d epochs flagged, %d of them with no unseen bag", flagged, blind)
	if flagged < 7 || blind < 6 {
		t.Errorf("reversed loop: %d of 9+ epochs flagged, %d of them without a single unseen bag; want 7+ and 6+", flagged, blind)
	}

	// Retrain through the daemon's control socket.
	sock := filepath.Join(t.TempDir(), "ctl", "sensor.sock")
	srv, err := control.Listen(sock, mon, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx) //nolint:errcheck
	cli, err := control.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Do(ctx, control.Request{Op: "retrain", Identity: "test/nobody"}); err == nil {
		t.Error("retrain of an unknown identity answered without error")
	}
	if _, err := cli.Do(ctx, control.Request{Op: "retrain"}); err == nil {
		t.Error("retrain without an identity answered without error")
	}
	if _, err := cli.Do(ctx, control.Request{Op: "retrain", Identity: "test/c1"}); err != nil {
		t.Fatal(err)
	}
	if r := row(); r.State != sensor.StateLearning || r.Learned != 0 || r.Database != 0 {
		t.Fatalf("after retrain: %+v", r)
	}
	before = len(epochsOf(t, out))
	cg.Run(t, unusual, 30)
	waitFor(t, func() bool { return len(epochsOf(t, out)) >= before+2 })
	for _, e := range epochsOf(t, out)[before:] {
		if e.Epoch.Mode != sensor.StateLearning || e.Type == events.TypeAnomaly {
			t.Errorf("epoch after retrain: %s %s", e.Type, e.Epoch.Mode)
		}
	}
	if err := mon.Retrain("test/nobody"); !errors.Is(err, sensor.ErrUnknownIdentity) {
		t.Errorf("retrain of an unknown identity: %v", err)
	}
}

// A profile saved in the middle of its learning phase (format v2 records
// that) is still learning when a daemon loads it, although it has its
// learn_epochs: the calibration has not spoken yet.
func TestMonitorResumesAProfileSavedMidLearning(t *testing.T) {
	cgtest.Root(t)
	dir := t.TempDir()
	opts := []sensor.MonitorOption{sensor.WithLearnEpochs(1), sensor.WithLearnFor(time.Minute),
		sensor.WithLearnMax(time.Hour), sensor.WithCalibration(bags.CalibrationConfig{}), sensor.WithProfileDir(dir),
		sensor.WithScorer(bags.RuleLM)}
	ctx, mon, _, out := startMonitorWith(t, opts...)
	cg := cgtest.New(t)
	ctr := sensor.Container{ID: "c1", Namespace: "test", CgroupPath: cg.Leaf}
	if err := mon.Add(ctx, ctr); err != nil {
		t.Fatal(err)
	}
	cg.Run(t, known, 60)
	waitFor(t, func() bool { return len(epochsOf(t, out)) >= 5 })
	if err := mon.SaveAll(); err != nil {
		t.Fatal(err)
	}
	p, err := bags.LoadFile(filepath.Join(dir, "test_c1.bosc"))
	if err != nil || p.Complete() || p.Rule() != bags.RuleLM || p.Stats().TrainedEpochs < 5 {
		t.Fatalf("saved mid-learning: %v, complete %v", err, p != nil && p.Complete())
	}
	ctx2, mon2, _, _ := startMonitorWith(t, opts...)
	cg2 := cgtest.New(t)
	if err := mon2.Add(ctx2, sensor.Container{ID: "c1", Namespace: "test", CgroupPath: cg2.Leaf}); err != nil {
		t.Fatal(err)
	}
	for _, r := range mon2.Rows() {
		if r.State != sensor.StateLearning || r.Learned < 5 {
			t.Errorf("reloaded profile: state %s with %d epochs learned, want learning on", r.State, r.Learned)
		}
	}
}

// rowOf is the monitor's row of identity; the test fails without one.
func rowOf(t *testing.T, mon *sensor.Monitor, identity string) sensor.Row {
	t.Helper()
	for _, r := range mon.Rows() {
		if r.Identity == identity {
			return r
		}
	}
	t.Fatalf("no row for %s", identity)
	return sensor.Row{}
}
