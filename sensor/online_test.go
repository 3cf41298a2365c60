package sensor_test

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/events"
	"github.com/escape-mtd/escape/sensor/internal/cgtest"
)

// withNovelCall is the normal loop run ten times, then one call the
// profile has never seen (the kernel counts every number above its table
// as one, "unknown"): the ten windows holding it share one new bag, so
// an epoch of 100 calls has about 11 mismatching windows, under the
// threshold of 30.
func withNovelCall(nr int) []int {
	var s []int
	for range 10 {
		s = append(s, known...)
	}
	return append(s, nr)
}

// Online learning on the daemon's path, over the kernel sensor: a benign
// new behaviour below the threshold is learned once its quarantine is over
// (its epochs then have no unseen bag) and saved to the profile file; a new
// behaviour followed by an anomaly is never learned, however long it waits.
func TestMonitorLearnsOnlineAfterTheQuarantineUnlessAnAnomalyFollows(t *testing.T) {
	cgtest.Root(t)
	const quarantine = 2 * time.Second
	dir := t.TempDir()
	ctx, mon, _, out := startMonitorWith(t, sensor.WithScorer(bags.RuleBoSC), sensor.WithThreshold(30),
		sensor.WithLearnEpochs(3), sensor.WithProfileDir(dir), sensor.WithOnlineSaveEvery(0),
		sensor.WithOnlineLearning(false, bags.OnlineConfig{Quarantine: quarantine, Rate: 60000, Queue: bags.MaxQuarantineQueue}))
	bad := sensor.Container{ID: "c0", Namespace: "test", CgroupPath: cgtest.New(t).Leaf,
		Labels: map[string]string{sensor.OnlineLabel: "maybe"}}
	if err := mon.Add(ctx, bad); err == nil {
		t.Error("a container with online learning labelled \"maybe\" was watched")
	}
	cg := cgtest.New(t)
	ctr := sensor.Container{ID: "c1", Namespace: "test", CgroupPath: cg.Leaf,
		Labels: map[string]string{sensor.OnlineLabel: "on"}}
	if err := mon.Add(ctx, ctr); err != nil {
		t.Fatal(err)
	}
	row := func() sensor.Row { return rowOf(t, mon, "test/c1") }
	// runEpochs runs seq and returns the epochs it closed.
	runEpochs := func(seq []int, repeat int) []events.Event {
		before := len(epochsOf(t, out))
		cg.Run(t, seq, repeat)
		want := before + len(seq)*repeat/100 // whole epochs of 100 calls
		waitFor(t, func() bool { return len(epochsOf(t, out)) >= want })
		return epochsOf(t, out)[before:]
	}
	// untilTaught runs the normal loop until the guard has taught more
	// than n epochs: FIFO, so everything offered before has left the
	// quarantine, taught or voided.
	untilTaught := func(n uint64) {
		for deadline := time.Now().Add(20 * quarantine); row().Guard.Taught <= n; {
			if time.Now().After(deadline) {
				t.Fatalf("online learning taught %d epochs, not more than %d, within %v: %+v", row().Guard.Taught, n, 20*quarantine, row().Guard)
			}
			runEpochs(known, 12)
		}
	}
	mismatching := func(eps []events.Event) (n int) {
		for _, e := range eps {
			if e.Epoch.Mode == "detecting" && e.Epoch.Mismatches > 0 {
				n++
			}
		}
		return n
	}
	runEpochs(known, 60)
	waitFor(t, func() bool { return row().State == sensor.StateWatching })
	if r := row(); !r.Online {
		t.Fatalf("after learning: online learning is off (%+v) despite the label", r)
	}

	// A benign new behaviour: below the threshold, quarantined, taught.
	benign := withNovelCall(1000)
	first := runEpochs(benign, 6)
	if n := mismatching(first); n < 4 {
		t.Fatalf("the new behaviour's first run: %d epochs with unseen bags, want 4 or more", n)
	}
	for _, e := range first {
		if e.Type == events.TypeAnomaly {
			t.Fatalf("the benign behaviour is anomalous (%d mismatches): the test cannot tell", e.Epoch.Mismatches)
		}
	}
	if r := row(); r.Guard.Quarantined == 0 {
		t.Fatalf("right after the new behaviour: %+v; want its epochs in quarantine", r.Guard)
	}
	taughtBefore := row().Guard.Taught
	untilTaught(taughtBefore + uint64(len(first)))
	again := runEpochs(benign, 6)
	if n := mismatching(again); n != 0 {
		t.Errorf("after its quarantine the benign behaviour still has %d epochs with unseen bags", n)
	}
	// What was taught reaches the profile file.
	runEpochs(known, 12)
	waitFor(t, func() bool {
		p, err := bags.LoadFile(filepath.Join(dir, "test_c1.bosc"))
		return err == nil && p.Stats().LearnedOnline > 0
	})

	// A new behaviour followed by an anomaly: voided, never learned.
	poisoned := withNovelCall(201) // time(NULL)
	g0 := row().Guard
	if n := mismatching(runEpochs(poisoned, 6)); n < 4 {
		t.Fatalf("the second new behaviour: %d epochs with unseen bags", n)
	}
	g := row().Guard
	if g.Admitted < g0.Admitted+4 {
		t.Fatalf("the second new behaviour was not quarantined: before %+v, after %+v", g0, g)
	}
	loud := []int{2000, 2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, 2009, 2010}
	attack := runEpochs(loud, 20)
	if !slices.ContainsFunc(attack, func(e events.Event) bool { return e.Type == events.TypeAnomaly }) {
		t.Fatal("the loud step raised no anomaly")
	}
	after := row().Guard
	if after.Anomalies <= g.Anomalies || after.Voided < g.Voided+4 {
		t.Fatalf("the anomaly did not void the quarantine: before %+v, after %+v", g, after)
	}
	untilTaught(after.Taught)
	if n := mismatching(runEpochs(poisoned, 6)); n < 4 {
		t.Errorf("the behaviour followed by an anomaly was learned: %d epochs with unseen bags, want 4 or more", n)
	}
	if st := row().Guard; st.Overflow != 0 || st.Limited != 0 {
		t.Errorf("the guard pushed out or refused epochs (%+v): the test does not show what it means to", st)
	}
}
