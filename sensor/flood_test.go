package sensor_test

import (
	"context"
	"testing"

	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/internal/cgtest"
)

// A flooding container overruns the ring buffer while nobody drains it: the
// kernel counts the failures, the epochs after them come out degraded (never
// clean), and the sensor keeps working for the next container.
func TestFloodCountsDropsAndDegrades(t *testing.T) {
	const w, e = 10, 100
	h := newStoppedHarness(t, sensor.WithWindow(w), sensor.WithEpoch(e), sensor.WithFlush(0),
		sensor.WithRingSize(4096))
	cg := cgtest.New(t)
	slot, gen, err := h.probe.Watch(cg.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	cg.Run(t, known, 20000) // 180,000 calls: 1,800 epochs of ~850 bytes into 4 KiB
	_, drops, err := h.probe.SlotCounters(slot)
	if err != nil {
		t.Fatal(err)
	}
	if drops < 1000 {
		t.Fatalf("kernel counted %d drops, want >= 1000 for 1,800 epochs into a 4 KiB ring", drops)
	}
	h.start(t)
	if err := h.col.Unwatch(context.Background(), cg.LeafID); err != nil {
		t.Fatal(err)
	}
	got := h.waitFinal(t, slot, gen)
	var lost, degraded uint32
	for _, ep := range got {
		lost += ep.Lost
		if ep.Bags.Degraded {
			degraded++
		}
	}
	last := got[len(got)-1]
	if !last.Bags.Degraded || last.NewDrops == 0 {
		t.Errorf("epoch after the drops not flagged: %+v", last)
	}
	if lost == 0 || degraded == 0 {
		t.Errorf("lost %d epochs, %d degraded: want both > 0", lost, degraded)
	}
	if int(lost)+len(got) < 1800 {
		t.Errorf("%d delivered + %d lost epochs < 1,800 closed", len(got), lost)
	}
	t.Logf("drops %d, delivered %d epochs, lost %d, degraded %d", drops, len(got), lost, degraded)

	// Still working: a clean container afterwards gets exact, clean epochs.
	cg2 := cgtest.New(t)
	slot2, gen2, err := h.probe.Watch(cg2.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	cg2.Run(t, known, 30)
	if err := h.col.Unwatch(context.Background(), cg2.LeafID); err != nil {
		t.Fatal(err)
	}
	compareEpochs(t, h.waitFinal(t, slot2, gen2), offline(t, cgtest.Stream(known, 30), w, e))
}
