package sensor_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/internal/cgtest"
)

// The differential test proper: the stream recorded by the per-event program
// is the stream the child issued, and bags/'s offline epochs of that
// recording equal the in-kernel epochs of the same run.
func TestDifferentialRecordedStream(t *testing.T) {
	const w, e = 10, 250
	h := newHarness(t, sensor.WithWindow(w), sensor.WithEpoch(e), sensor.WithFlush(0))
	st, err := sensor.LoadStreamer(0)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cg := cgtest.New(t)
	if err := st.Watch(cg.LeafID); err != nil {
		t.Fatal(err)
	}
	slot, gen, err := h.probe.Watch(cg.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	seq := []int{110, 39, 39, 102, 1000, 107, 24, 24, 24, 186, 111, 110, 104, 108}
	cg.Run(t, seq, 101)
	if err := h.col.Unwatch(context.Background(), cg.LeafID); err != nil {
		t.Fatal(err)
	}
	var rec ringbuf.Record
	var recorded []int
	for {
		c, err := st.Read(time.Now().Add(200*time.Millisecond), &rec)
		if errors.Is(err, sensor.ErrTimeout) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if c.Cgid != cg.LeafID {
			t.Fatalf("streamed call of cgroup %d", c.Cgid)
		}
		recorded = append(recorded, int(c.Nr))
	}
	if d, err := st.Drops(cg.LeafID); err != nil || d != 0 {
		t.Fatalf("stream drops %d, %v", d, err)
	}
	want := cgtest.Stream(seq, 101)
	folded := make([]int, len(want))
	for i, nr := range want {
		folded[i] = int(fold(nr))
	}
	if !slices.Equal(recorded, folded) {
		t.Fatalf("recorded %d calls differ from the %d issued", len(recorded), len(folded))
	}
	compareEpochs(t, h.waitFinal(t, slot, gen), offline(t, recorded, w, e))
}
