package sensor_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/internal/cgtest"
	"go.uber.org/zap/zaptest"
)

// harness runs a probe and collector and gathers epochs.
type harness struct {
	probe *sensor.Probe
	col   *sensor.Collector
	mu    sync.Mutex
	eps   []sensor.Epoch
}

func newHarness(t *testing.T, opts ...sensor.ProbeOption) *harness {
	t.Helper()
	h := newStoppedHarness(t, opts...)
	h.start(t)
	return h
}

// newStoppedHarness loads the probe but does not drain its ring yet.
func newStoppedHarness(t *testing.T, opts ...sensor.ProbeOption) *harness {
	t.Helper()
	cgtest.Root(t)
	log := zaptest.NewLogger(t)
	p, err := sensor.LoadProbe(append([]sensor.ProbeOption{sensor.WithLogger(log)}, opts...)...)
	if err != nil {
		t.Fatalf("load probe: %v", err)
	}
	h := &harness{probe: p}
	h.col = sensor.NewCollector(p, func(e sensor.Epoch) {
		h.mu.Lock()
		h.eps = append(h.eps, e)
		h.mu.Unlock()
	}, log)
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close probe: %v", err)
		}
	})
	return h
}

func (h *harness) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.col.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("collector: %v", err)
		}
	})
}

// epochs waits until a final epoch of (slot, gen) arrived and returns the
// slot generation's epochs.
func (h *harness) waitFinal(t *testing.T, slot, gen uint32) []sensor.Epoch {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		var out []sensor.Epoch
		final := false
		for _, e := range h.eps {
			if e.Slot == slot && e.Gen == gen {
				out = append(out, e)
				final = final || e.Final
			}
		}
		h.mu.Unlock()
		if final {
			if last := out[len(out)-1]; last.Final && last.Calls == 0 {
				out = out[:len(out)-1] // the end-of-stream marker
			}
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no final epoch for slot %d gen %d", slot, gen)
	return nil
}

// offline computes bags/'s epochs of a stream, the last one flushed.
func offline(t *testing.T, stream []int, w, e int) []bags.Epoch {
	t.Helper()
	x, err := bags.NewWindower(w, e)
	if err != nil {
		t.Fatal(err)
	}
	var out []bags.Epoch
	cp := func(ep bags.Epoch) bags.Epoch {
		seq := make([]bags.Bag, len(ep.Order))
		for i, o := range ep.Order {
			seq[i] = ep.Bags[o].Bag
		}
		ep.Bags = append([]bags.BagCount(nil), ep.Bags...)
		bags.SortBags(ep.Bags)
		idx := make(map[bags.Bag]uint32, len(ep.Bags))
		for i, bc := range ep.Bags {
			idx[bc.Bag] = uint32(i)
		}
		ep.Order = make([]uint32, len(seq))
		for i, b := range seq {
			ep.Order[i] = idx[b]
		}
		return ep
	}
	for _, nr := range stream {
		if ep, ok := x.Push(fold(nr)); ok {
			out = append(out, cp(ep))
		}
	}
	if ep, ok := x.Flush(); ok {
		out = append(out, cp(ep))
	}
	return out
}

// fold is the kernel's folding of raw ids into bag numbers.
func fold(nr int) uint16 {
	if nr >= 0 && nr < 511 {
		return uint16(nr)
	}
	return bags.Unknown
}

func compareEpochs(t *testing.T, got []sensor.Epoch, want []bags.Epoch) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("kernel delivered %d epochs, offline %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i].Bags, want[i]
		if g.Degraded {
			t.Errorf("epoch %d degraded: %+v", i, got[i])
		}
		if g.Windows != w.Windows || len(g.Bags) != len(w.Bags) {
			t.Fatalf("epoch %d: kernel %d windows %d bags, offline %d windows %d bags",
				i, g.Windows, len(g.Bags), w.Windows, len(w.Bags))
		}
		for j := range g.Bags {
			if g.Bags[j] != w.Bags[j] {
				t.Fatalf("epoch %d bag %d: kernel %v x%d, offline %v x%d", i, j,
					g.Bags[j].Bag, g.Bags[j].Count, w.Bags[j].Bag, w.Bags[j].Count)
			}
		}
		// The windows in the order they closed, as the sequence scorers
		// read them.
		if !slices.Equal(g.Order, w.Order) {
			t.Fatalf("epoch %d: kernel window order %v, offline %v", i, g.Order, w.Order)
		}
		if got[i].Seq != uint32(i) {
			t.Errorf("epoch %d has seq %d", i, got[i].Seq)
		}
	}
}

// Harmless syscalls: getppid getpid getuid geteuid getgid getegid gettid
// sched_yield getpgrp, and numbers the kernel does not know.
var known = []int{110, 39, 102, 107, 104, 108, 186, 24, 111}

func TestKnownSequenceExactBags(t *testing.T) {
	const w, e = 10, 100
	h := newHarness(t, sensor.WithWindow(w), sensor.WithEpoch(e), sensor.WithFlush(0))
	cg := cgtest.New(t)
	slot, gen, err := h.probe.Watch(cg.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	// 7 x 37 = 259 calls + exit_group: two full epochs and a partial one
	// ending mid-epoch when the process exits.
	seq := []int{110, 110, 39, 102, 110, 107, 104, 108, 186, 24, 111, 110, 39, 39, 39, 102, 107, 108, 24, 24,
		110, 111, 186, 39, 102, 104, 104, 110, 24, 111, 39, 107, 108, 186, 110, 39, 102}
	cg.Run(t, seq, 7)
	if err := h.col.Unwatch(context.Background(), cg.LeafID); err != nil {
		t.Fatal(err)
	}
	got := h.waitFinal(t, slot, gen)
	stream := cgtest.Stream(seq, 7)
	compareEpochs(t, got, offline(t, stream, w, e))
	if !got[len(got)-1].Final || got[len(got)-1].Calls != uint32(len(stream)%e) {
		t.Errorf("last epoch %+v: want the final partial epoch of %d calls", got[len(got)-1], len(stream)%e)
	}
	// Spot-check one bag by hand: the first window.
	first := bags.BagOf([]uint16{110, 110, 39, 102, 110, 107, 104, 108, 186, 24})
	if _, ok := find(got[0].Bags, first); !ok {
		t.Errorf("first window's bag %v missing from epoch 0", first)
	}
	if n := got[0].Bags.Windows; n != e-w+1 {
		t.Errorf("epoch 0 has %d windows, want E-W+1 = %d", n, e-w+1)
	}
}

func find(e bags.Epoch, b bags.Bag) (uint32, bool) {
	for _, bc := range e.Bags {
		if bc.Bag == b {
			return bc.Count, true
		}
	}
	return 0, false
}

func TestUnknownSyscallNumbers(t *testing.T) {
	const w, e = 4, 50
	h := newHarness(t, sensor.WithWindow(w), sensor.WithEpoch(e), sensor.WithFlush(0))
	cg := cgtest.New(t)
	slot, gen, err := h.probe.Watch(cg.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	// 511 and up, negative and x32-flagged ids all fold to bags.Unknown.
	seq := []int{110, 1000, 39, 511, -1, 110, 0x40000027, 5000, 102, 65535, 65534}
	cg.Run(t, seq, 9)
	if err := h.col.Unwatch(context.Background(), cg.LeafID); err != nil {
		t.Fatal(err)
	}
	got := h.waitFinal(t, slot, gen)
	compareEpochs(t, got, offline(t, cgtest.Stream(seq, 9), w, e))
	all := bags.BagOf([]uint16{bags.Unknown, bags.Unknown, bags.Unknown, bags.Unknown})
	_ = all
	n := 0
	for _, ep := range got {
		for _, bc := range ep.Bags.Bags {
			n += bc.Bag.Count(bags.Unknown) * int(bc.Count)
		}
	}
	if n == 0 {
		t.Fatal("no window holds bags.Unknown")
	}
}

func TestDifferentialRandomStream(t *testing.T) {
	for _, cfg := range []struct{ w, e int }{{10, 1000}, {6, 333}, {16, 4096}, {1, 10}} {
		t.Run(fmt.Sprintf("W%d_E%d", cfg.w, cfg.e), func(t *testing.T) {
			h := newHarness(t, sensor.WithWindow(cfg.w), sensor.WithEpoch(cfg.e), sensor.WithFlush(0))
			cg := cgtest.New(t)
			slot, gen, err := h.probe.Watch(cg.Leaf)
			if err != nil {
				t.Fatal(err)
			}
			// A pseudo-random stream over the harmless set (deterministic LCG).
			seq := make([]int, 2999)
			x := uint32(cfg.w*7919 + cfg.e)
			for i := range seq {
				x = x*1664525 + 1013904223
				seq[i] = known[int(x>>24)%len(known)]
			}
			cg.Run(t, seq, 3)
			if err := h.col.Unwatch(context.Background(), cg.LeafID); err != nil {
				t.Fatal(err)
			}
			got := h.waitFinal(t, slot, gen)
			compareEpochs(t, got, offline(t, cgtest.Stream(seq, 3), cfg.w, cfg.e))
		})
	}
}

// A watched cgroup removed before Unwatch leaves the kernel's index at rmdir
// (its address could be reused by a later cgroup); Unwatch still returns its
// partial epoch, and the slot serves the next cgroup exactly.
func TestRemovedCgroupBeforeUnwatch(t *testing.T) {
	const w, e = 10, 100
	h := newHarness(t, sensor.WithWindow(w), sensor.WithEpoch(e), sensor.WithFlush(0))
	cg := cgtest.New(t)
	slot, gen, err := h.probe.Watch(cg.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	cg.Run(t, known, 30)
	removed := false
	for i := 0; i < 100 && !removed; i++ {
		_ = os.Remove(cg.Leaf)
		removed = os.Remove(cg.Dir) == nil
		time.Sleep(20 * time.Millisecond)
	}
	if !removed {
		t.Fatal("cannot remove the test cgroup")
	}
	if err := h.col.Unwatch(context.Background(), cg.LeafID); err != nil {
		t.Fatalf("unwatch a removed cgroup: %v", err)
	}
	compareEpochs(t, h.waitFinal(t, slot, gen), offline(t, cgtest.Stream(known, 30), w, e))

	cg2 := cgtest.New(t)
	slot2, gen2, err := h.probe.Watch(cg2.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	cg2.Run(t, known, 20)
	if err := h.col.Unwatch(context.Background(), cg2.LeafID); err != nil {
		t.Fatal(err)
	}
	compareEpochs(t, h.waitFinal(t, slot2, gen2), offline(t, cgtest.Stream(known, 20), w, e))
}
