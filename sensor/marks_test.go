package sensor_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/internal/cgtest"
)

// The kernel counts a call only for a marked thread, so the marks must follow
// cgroup membership through every way a task enters or leaves a watched
// cgroup: created inside it (CLONE_INTO_CGROUP and clone), already inside
// when it becomes watched, a whole multi-threaded process moved in and out
// through cgroup.procs, and left behind when the cgroup stops being watched.
func TestMarksFollowMembership(t *testing.T) {
	h := newHarness(t)
	watched, other, before := cgtest.Domain(t), cgtest.Domain(t), cgtest.Domain(t)

	// Already running in a cgroup when it becomes watched.
	early := cgtest.Spin(t, before, 3)
	slotB, genB, err := h.probe.Watch(before)
	if err != nil {
		t.Fatal(err)
	}
	assertMarks(t, h.probe, early.Process.Pid, true, slotB, genB, "already inside when watched")

	slot, gen, err := h.probe.Watch(watched)
	if err != nil {
		t.Fatal(err)
	}
	// Enough threads to run the kernel's per-CPU storage caches dry when the
	// group moves in with interrupts off: the marks the kernel cannot
	// allocate are set from userspace (REC_REMARK), and counted as drops.
	outside := cgtest.Spin(t, other, 64)
	assertMarks(t, h.probe, outside.Process.Pid, false, 0, 0, "never in a watched cgroup")

	// Created inside: CLONE_INTO_CGROUP, then the Go runtime's own clones.
	inside := cgtest.Spin(t, watched, 3)
	assertMarks(t, h.probe, inside.Process.Pid, true, slot, gen, "created inside")
	calls := waitCalls(t, h.probe, slot, 0)

	// A whole thread group moved in, then out again.
	move := func(pid int, dir string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			t.Fatalf("move %d to %s: %v", pid, dir, err)
		}
	}
	move(outside.Process.Pid, watched)
	assertMarks(t, h.probe, outside.Process.Pid, true, slot, gen, "moved in")
	if _, drops, err := h.probe.SlotCounters(slot); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("moving %d threads in: %d marks set from userspace", len(cgtest.Threads(t, outside.Process.Pid)), drops)
	}
	move(outside.Process.Pid, other)
	assertMarks(t, h.probe, outside.Process.Pid, false, 0, 0, "moved out")

	// Stops being watched: the marks left behind go.
	waitCalls(t, h.probe, slot, calls)
	cgid, err := sensor.CgroupID(watched)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.col.Unwatch(context.Background(), cgid); err != nil {
		t.Fatal(err)
	}
	assertMarks(t, h.probe, inside.Process.Pid, false, 0, 0, "after unwatch")
	assertMarks(t, h.probe, early.Process.Pid, true, slotB, genB, "other cgroup after unwatch")
}

// assertMarks waits (the kernel may hand a mark over to userspace) until
// every thread of pid is marked as wanted.
func assertMarks(t *testing.T, p *sensor.Probe, pid int, want bool, slot, gen uint32, what string) {
	t.Helper()
	var bad string
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		bad = ""
		tids := cgtest.Threads(t, pid)
		for _, tid := range tids {
			s, g, ok, err := p.MarkOf(tid)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if ok != want || (want && (s != slot || g != gen)) {
				bad = fmt.Sprintf("thread %d of %d (%d threads) marked=%v slot %d gen %d, want marked=%v slot %d gen %d",
					tid, pid, len(tids), ok, s, g, want, slot, gen)
				break
			}
		}
		if bad == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, bad)
		}
	}
}

// waitCalls waits until the slot counted more than after calls.
func waitCalls(t *testing.T, p *sensor.Probe, slot uint32, after uint64) uint64 {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		n, _, err := p.SlotCounters(slot)
		if err != nil {
			t.Fatal(err)
		}
		if n > after {
			return n
		}
	}
	t.Fatalf("slot %d counted no call after %d", slot, after)
	return 0
}
