package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/sensor/events"
)

// soak replaces the attack rounds with dur of the client's normal load and
// reports every anomaly the sensor raised on redis from the start of
// detection, and whether the plane set it aside (CRIU's code runs inside the
// container during the plane's own checkpoints). With no attack, every
// anomaly the plane acted on is a false positive, and its decisions show
// what they cost. It measures the detection settings (--learn-for,
// --threshold) and fails only if the loop's machinery does.
func (d *demo) soak(ctx context.Context, dur time.Duration) error {
	d.step(fmt.Sprintf("6/6 soak: %v of normal load, no attack: what the sensor flags and what the plane does", dur))
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(dur):
	}
	evs, err := d.events()
	if err != nil {
		return err
	}
	audit, err := d.audit()
	if err != nil {
		return err
	}
	t := tallySoak(evs, audit)
	var b strings.Builder
	fmt.Fprintf(&b, "ESCAPE soak (%s): learn_for %v, learn_max %v, scorer %s, threshold %s, %v of load after the checkpoint\n",
		time.Now().Format(time.RFC3339), d.learnFor, d.learnMax, d.scorer, d.thresholdText(), dur)
	fmt.Fprintf(&b, "  - %d detecting epochs over %.0f s, %d anomalous, %d of them set aside by the plane; plane decisions %v\n",
		t.epochs, time.Since(t.detectFrom).Seconds(), t.anomalies, t.setAside, t.decisions)
	for _, l := range t.lines {
		fmt.Fprintf(&b, "  - %s\n", l)
	}
	fmt.Printf("\n\033[1m%s == soak summary\033[0m\n%s", d.elapsed(), b.String())
	return os.WriteFile(filepath.Join(d.out, "soak.txt"), []byte(b.String()), 0o644)
}

func (d *demo) thresholdText() string {
	if d.threshold == 0 {
		return "calibrated"
	}
	return fmt.Sprintf("%g", d.threshold)
}

// soakTally is what a soak saw: the detecting epochs of redis, its
// anomalies, how many of them the plane set aside, and its decisions.
type soakTally struct {
	detectFrom                  time.Time
	epochs, anomalies, setAside int
	decisions                   map[string]int
	lines                       []string // one per anomaly
}

func tallySoak(evs []events.Event, audit []plane.AuditEvent) soakTally {
	// Why the plane set an anomaly aside, by the sensor's epoch number and
	// mismatches: the audit names the container's current host, not always
	// the copy's that reported, and each copy numbers its epochs afresh.
	type epochKey struct {
		seq        uint32
		mismatches uint64
	}
	setAside := map[epochKey]string{}
	t := soakTally{decisions: map[string]int{}}
	for _, e := range audit {
		switch {
		case e.Kind == "report" && e.Outcome == "ignored" && len(e.Reasons) > 0:
			seq, ok1 := e.Details["seq"].(float64)
			mism, ok2 := e.Details["mismatches"].(float64)
			if ok1 && ok2 {
				setAside[epochKey{uint32(seq), uint64(mism)}] = e.Reasons[0]
			}
		case e.Kind == "decision" && e.Container == serviceID && e.Decision != "none":
			t.decisions[e.Decision]++
		}
	}
	for _, e := range evs {
		if e.Epoch == nil || e.Container == nil || e.Container.Identity != serviceID || e.Epoch.Mode != "detecting" {
			continue
		}
		if t.detectFrom.IsZero() {
			t.detectFrom = e.Time
		}
		t.epochs++
		if e.Type != events.TypeAnomaly {
			continue
		}
		t.anomalies++
		why, aside := setAside[epochKey{e.Epoch.Seq, e.Epoch.Mismatches}]
		if aside {
			t.setAside++
			why = "; the plane set it aside: " + why
		}
		names := make([]string, 0, len(e.Epoch.Unseen))
		for _, u := range e.Epoch.Unseen {
			names = append(names, u.Name)
		}
		t.lines = append(t.lines, fmt.Sprintf("anomaly %.1f s into detection: %s %.3g (threshold %.3g), calls %s%s",
			e.Time.Sub(t.detectFrom).Seconds(), e.Epoch.Scorer, e.Epoch.Value, e.Epoch.Limit, strings.Join(names, " "), why))
	}
	return t
}
