package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/escape-mtd/escape/bags/trace"
)

// record captures a busy cgroup's stream into a recording that bags/trace
// reads back, with identity and thread ids.
func TestRecordWritesReadableRecording(t *testing.T) {
	dir := busyCgroup(t)
	out := filepath.Join(t.TempDir(), "busy.esctrace")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, drops, err := record(ctx, dir, out, "busy", "shell-loop", 5000)
	if err != nil || n != 5000 || drops != 0 {
		t.Fatalf("record: %d calls, %d drops, %v", n, drops, err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := trace.NewRecordReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if m := r.Meta(); m.ContainerID != "busy" || m.Workload != "shell-loop" {
		t.Errorf("meta %+v", m)
	}
	// Stamps are Unix ns: within the capture, which starts at StartNS
	// (less the clock conversion's error) and ends before the deadline.
	start := r.Meta().StartNS
	got, tids, last := 0, map[uint32]bool{}, int64(0)
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got++
		tids[ev.TID] = true
		if ev.TS < start-int64(time.Second) || ev.TS > start+int64(20*time.Second) {
			t.Fatalf("event %d stamped %d, %v from the recording's start", got, ev.TS, time.Duration(ev.TS-start))
		}
		last = max(last, ev.TS)
	}
	if last < start {
		t.Errorf("the last event is stamped %v before the recording's start", time.Duration(start-last))
	}
	if got != 5000 || len(tids) < 2 || tids[0] {
		t.Errorf("read %d events from %d threads (%v)", got, len(tids), tids[0])
	}
	if _, _, err := record(ctx, "/nonexistent", out, "", "", 1); err == nil {
		t.Error("record of a missing cgroup succeeded")
	}
}
