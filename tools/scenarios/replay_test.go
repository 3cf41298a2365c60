package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// synthetic is a recording of a periodic normal stream at rate calls/s for
// normal, then attack calls (new syscalls) for the rest.
func synthetic(normal, attack time.Duration, rate int) (*Recording, int64) {
	rec := &Recording{}
	t0 := int64(1_700_000_000e9)
	step := int64(time.Second) / int64(rate)
	pattern := []uint16{0, 1, 232, 0, 1, 3, 232, 44, 45, 0, 1, 232}
	end := t0 + int64(normal)
	for ts, i := t0, 0; ts < end+int64(attack); ts, i = ts+step, i+1 {
		nr := pattern[i%len(pattern)]
		if ts >= end {
			nr = uint16(56 + i%7) // clone, execve, ... never seen in the normal part
		}
		rec.Calls = append(rec.Calls, nr)
		rec.TS = append(rec.TS, ts)
	}
	return rec, end
}

func TestReplaySynthetic(t *testing.T) {
	rec, start := synthetic(10*time.Minute, 10*time.Second, 500)
	rp, err := ReplayRecording(context.Background(), rec, start, DefaultReplay())
	if err != nil {
		t.Fatal(err)
	}
	if rp.TrainEpochs < 40 || rp.Tests == 0 || rp.AttackEpochs == 0 {
		t.Fatalf("split: %+v", rp)
	}
	for _, name := range scorerNames() {
		r, ok := rp.Result(name)
		if !ok {
			t.Fatalf("%s: no result", name)
		}
		if !r.Detected || r.Latency > 3*time.Second || r.FalseAlarms != 0 {
			t.Errorf("%s: %+v: want detected within 3 s (an epoch is 2 s here), no false alarm", name, r)
		}
	}
	table := RenderTable([]Outcome{{Scenario: "syn", Service: "s", Covers: []string{"miner"}, Replay: rp, Expect: Expect{Scorer: scorerLM, Within: Duration(3 * time.Second)}}}, DefaultReplay())
	if !strings.Contains(table, "| syn | s | miner | lm within 3s: met | **detected") {
		t.Errorf("table:\n%s", table)
	}
	short, start := synthetic(20*time.Second, 5*time.Second, 500)
	if _, err := ReplayRecording(context.Background(), short, start, DefaultReplay()); err == nil || !strings.Contains(err.Error(), "too few") {
		t.Errorf("a 20 s normal phase: want too few epochs, got %v", err)
	}
	if _, err := ReplayRecording(context.Background(), short, short.TS[len(short.TS)-1]+1, DefaultReplay()); err == nil {
		t.Error("an attack start after the recording: want an error")
	}
}
