package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/bags/syscalls"
	"github.com/escape-mtd/escape/bags/trace"
)

// recording returns a reader over calls made at the given seconds (calls
// alternate between two numbers), stamped or not.
func recording(t *testing.T, stamped bool, secs ...float64) trace.Reader {
	t.Helper()
	var buf bytes.Buffer
	w, err := trace.NewWriter(&buf, trace.Meta{Arch: syscalls.X86_64}, trace.WithTimestamps(stamped))
	if err != nil {
		t.Fatal(err)
	}
	const base = int64(1_700_000_000) * int64(time.Second)
	for i, s := range secs {
		if err := w.Write(trace.Event{Nr: uint16(i % 2), TS: base + int64(s*float64(time.Second))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := trace.NewRecordReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// windowsPerEpoch feeds r with W=2, E=100 and returns each epoch's window count.
func windowsPerEpoch(t *testing.T, r trace.Reader, tm timing) ([]uint64, error) {
	t.Helper()
	x, err := bags.NewWindower(2, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	err = feed(context.Background(), r, x, tm, func(e bags.Epoch) error { got = append(got, e.Windows); return nil })
	return got, err
}

func TestFeedTiming(t *testing.T) {
	// Calls at 0-3 s, then 10-12 s. With a 5 s flush the call at 10 s closes
	// the first epoch (calls 1-4: 3 windows); the window runs on across the
	// edge, so the second epoch's 3 calls close 3 windows.
	secs := []float64{0, 1, 2, 3, 10, 11, 12}
	for _, c := range []struct {
		name string
		tm   timing
		want []uint64
	}{
		{"by count only", timing{}, []uint64{6}},
		{"flush", timing{flush: 5 * time.Second}, []uint64{3, 3}},
		{"flush, from 5 s", timing{flush: 5 * time.Second, from: 5 * time.Second}, []uint64{3}},
		{"flush, until 10.5 s", timing{flush: 5 * time.Second, until: 10500 * time.Millisecond}, []uint64{3, 1}},
		{"until 2.5 s", timing{until: 2500 * time.Millisecond}, []uint64{2}},
	} {
		got, err := windowsPerEpoch(t, recording(t, true, secs...), c.tm)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: windows per epoch %v, %v; want %v", c.name, got, err, c.want)
		}
	}
}

func TestFeedTimingRefusesWhatItCannotDo(t *testing.T) {
	if _, err := windowsPerEpoch(t, recording(t, false, 0, 1, 2), timing{flush: time.Second}); err == nil ||
		!strings.Contains(err.Error(), "no time stamp") {
		t.Errorf("an unstamped trace with --flush: %v", err)
	}
	for _, tm := range []timing{{from: 2 * time.Second, until: time.Second}, {flush: -time.Second}} {
		if _, err := windowsPerEpoch(t, recording(t, true, 0, 1, 2), tm); err == nil {
			t.Errorf("timing %+v accepted", tm)
		}
	}
}
