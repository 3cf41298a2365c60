package main

import (
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/sensor/events"
)

func TestTallySoakTellsSetAsideFromActedOn(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	redis := &events.Container{Identity: serviceID, Host: "h1"}
	epoch := func(typ string, sec int, seq uint32, mism uint64, mode string) events.Event {
		return events.Event{Type: typ, Time: t0.Add(time.Duration(sec) * time.Second), Container: redis,
			Epoch: &events.Epoch{Seq: seq, Mismatches: mism, Threshold: 20, Mode: mode, Scorer: "lm", Value: float64(mism) / 10, Limit: 2,
				Unseen: []events.Syscall{{Name: "prctl", Novel: true}}}}
	}
	evs := []events.Event{
		epoch(events.TypeEpoch, 0, 1, 0, "learning"), // not counted: learning
		epoch(events.TypeEpoch, 1, 2, 0, "detecting"),
		epoch(events.TypeAnomaly, 2, 3, 900, "detecting"), // set aside: the plane's checkpoint
		epoch(events.TypeAnomaly, 3, 4, 25, "detecting"),  // acted on
		{Type: events.TypeAnomaly, Time: t0, Container: &events.Container{Identity: "other"},
			Epoch: &events.Epoch{Seq: 4, Mismatches: 25, Mode: "detecting"}}, // another container
	}
	audit := []plane.AuditEvent{
		{Kind: "report", Container: serviceID, Host: "h2", Outcome: "ignored", Reasons: []string{"overlaps the plane's own checkpoint"},
			Details: map[string]any{"seq": float64(3), "mismatches": float64(900), "type": "anomaly"}},
		{Kind: "report", Container: serviceID, Outcome: "ignored", Reasons: []string{"same epoch, other count"},
			Details: map[string]any{"seq": float64(4), "mismatches": float64(24)}},
		{Kind: "decision", Container: serviceID, Decision: "rollback"},
		{Kind: "decision", Container: serviceID, Decision: "none"},
	}
	got := tallySoak(evs, audit)
	if got.epochs != 3 || got.anomalies != 2 || got.setAside != 1 || !got.detectFrom.Equal(t0.Add(time.Second)) {
		t.Errorf("tally %+v: want 3 detecting epochs from 1 s, 2 anomalies, 1 set aside", got)
	}
	if len(got.decisions) != 1 || got.decisions["rollback"] != 1 {
		t.Errorf("decisions %v, want one rollback", got.decisions)
	}
	if len(got.lines) != 2 || !strings.Contains(got.lines[0], "set it aside: overlaps the plane's own checkpoint") ||
		strings.Contains(got.lines[1], "set it aside") || !strings.Contains(got.lines[1], "lm 2.5 (threshold 2), calls prctl") {
		t.Errorf("lines %q", got.lines)
	}
}
