package main

import (
	"fmt"
	"strings"
	"time"
)

// RenderTable is the scenario × scorer table and the run's details.
func RenderTable(outcomes []Outcome, cfg ReplayConfig) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| scenario | service | covers | expected | %s |\n", strings.Join(scorerNames(), " | "))
	fmt.Fprintf(&b, "|---|---|---|---|%s\n", strings.Repeat("---|", len(scorerNames())))
	var normal time.Duration
	for _, o := range outcomes {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |", o.Scenario, o.Service, strings.Join(o.Covers, ", "), expectation(o))
		for _, name := range scorerNames() {
			b.WriteString(" " + cell(o, name) + " |")
		}
		b.WriteString("\n")
		if o.Replay != nil {
			normal += o.Replay.TrainSpan + o.Replay.ValidSpan + o.Replay.TestSpan
		}
	}
	fmt.Fprintf(&b, "\nCell: detected (latency from the attack's start to the first epoch over the threshold) or missed (the attack's "+
		"largest score / the threshold); then false alarms on the normal test part, per hour. **Bold**: the scenario's expected "+
		"scorer. W=%d, E=%d, flush %v; train on the first %.0f%% of each normal phase (lm calibrated there, as the daemon), "+
		"thresholds of the other rules at the same %g false alarm/day on the next %.0f%%, false alarms counted on the rest.\n\n",
		cfg.Window, cfg.Epoch, cfg.Flush, cfg.TrainShare*100, cfg.FalseAlarmsPerDay, cfg.ValidShare*100)
	fmt.Fprintf(&b, "Normal load in all: %v over %d scenarios.\n\n", normal.Round(time.Second), len(outcomes))
	b.WriteString("| scenario | attack in | calls | train / valid / test | epochs train / valid / test / attack | attack ran | thresholds (lm, bosc, papers, stide) | note |\n|---|---|---|---|---|---|---|---|\n")
	for _, o := range outcomes {
		if o.Replay == nil {
			fmt.Fprintf(&b, "| %s | %s | | | | | | error: %s |\n", o.Scenario, o.AttackIn, oneLine(o.Error))
			continue
		}
		r := o.Replay
		var ts []string
		for _, s := range r.Results {
			ts = append(ts, fmt.Sprintf("%.3g", s.Threshold))
		}
		note := "attack exit " + o.AttackExit
		if o.Drops != "" {
			note += "; " + oneLine(o.Drops)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %v / %v / %v | %d / %d / %d / %d | %v | %s | %s |\n", o.Scenario, o.AttackIn, r.Calls,
			r.TrainSpan.Round(time.Second), r.ValidSpan.Round(time.Second), r.TestSpan.Round(time.Second),
			r.TrainEpochs, r.ValidEpochs, r.Tests, r.AttackEpochs,
			time.Duration(o.AttackEnd-o.AttackStart).Round(10*time.Millisecond), strings.Join(ts, ", "), note)
	}
	return b.String()
}

func cell(o Outcome, scorer string) string {
	if o.Replay == nil {
		return "not run"
	}
	r, ok := o.Replay.Result(scorer)
	if !ok {
		return "—"
	}
	var verdict string
	if r.Detected {
		verdict = "detected " + r.Latency.Round(time.Millisecond).String()
	} else {
		verdict = fmt.Sprintf("missed (%.3g / %.3g)", r.AttackMax, r.Threshold)
	}
	s := fmt.Sprintf("%s; %.3g FA/h", verdict, r.FalseAlarmsPerHour(o.Replay.TestSpan))
	if scorer == o.Expect.Scorer {
		s = "**" + s + "**"
	}
	return s
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// expectation says whether the scenario's expected scorer caught the attack
// within the expected latency.
func expectation(o Outcome) string {
	want := fmt.Sprintf("%s within %v", o.Expect.Scorer, time.Duration(o.Expect.Within))
	if o.Replay == nil {
		return want + ": not run"
	}
	r, ok := o.Replay.Result(o.Expect.Scorer)
	if ok && r.Detected && r.Latency <= time.Duration(o.Expect.Within) {
		return want + ": met"
	}
	return want + ": **NOT met**"
}
