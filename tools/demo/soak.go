package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/escape-mtd/escape/sensor/events"
)

// soak replaces the attack rounds with dur of the client's normal load and
// reports every anomaly the sensor raised on redis from the start of
// detection, and whether the plane set it aside (CRIU's code runs inside the
// container during the plane's own checkpoints). With no attack, every
// anomaly the plane acted on is a false positive, and its decisions show
// what they cost. It measures the learning settings
// (--learn-for) and fails only if the loop's machinery does.
func (d *demo) soak(ctx context.Context, dur time.Duration) error {
	d.step(fmt.Sprintf("6/6 soak: %v of normal load, no attack; every anomaly is a false positive", dur))
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
	// Why the plane set an anomaly aside, by the sensor's epoch number and
	// mismatches: the audit names the container's current host, not always
	// the copy's that reported, and each copy numbers its epochs afresh.
	type epochKey struct {
		seq        uint32
		mismatches uint64
	}
	setAside := map[epochKey]string{}
	decisions := map[string]int{}
	for _, e := range audit {
		switch {
		case e.Kind == "report" && e.Outcome == "ignored" && len(e.Reasons) > 0:
			seq, ok1 := e.Details["seq"].(float64)
			mism, ok2 := e.Details["mismatches"].(float64)
			if ok1 && ok2 {
				setAside[epochKey{uint32(seq), uint64(mism)}] = e.Reasons[0]
			}
		case e.Kind == "decision" && e.Container == serviceID && e.Decision != "none":
			decisions[e.Decision]++
		}
	}
	var detectFrom time.Time
	var epochs, anomalies, asideCount int
	var lines []string
	for _, e := range evs {
		if e.Epoch == nil || e.Container == nil || e.Container.Identity != serviceID || e.Epoch.Mode != "detecting" {
			continue
		}
		if detectFrom.IsZero() {
			detectFrom = e.Time
		}
		epochs++
		if e.Type != events.TypeAnomaly {
			continue
		}
		anomalies++
		why, aside := setAside[epochKey{e.Epoch.Seq, e.Epoch.Mismatches}]
		if aside {
			asideCount++
			why = "; the plane set it aside: " + why
		}
		names := make([]string, 0, len(e.Epoch.Unseen))
		for _, u := range e.Epoch.Unseen {
			names = append(names, u.Name)
		}
		lines = append(lines, fmt.Sprintf("anomaly %.1f s into detection: %d mismatches (threshold %d), calls %s%s",
			e.Time.Sub(detectFrom).Seconds(), e.Epoch.Mismatches, e.Epoch.Threshold, strings.Join(names, " "), why))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ESCAPE soak (%s): learn_for %v, threshold %d, %v of load after the checkpoint\n",
		time.Now().Format(time.RFC3339), d.learnFor, d.threshold, dur)
	fmt.Fprintf(&b, "  - %d detecting epochs over %.0f s, %d anomalous, %d of them set aside by the plane; plane decisions %v\n",
		epochs, time.Since(detectFrom).Seconds(), anomalies, asideCount, decisions)
	for _, l := range lines {
		fmt.Fprintf(&b, "  - %s\n", l)
	}
	fmt.Printf("\n\033[1m%s == soak summary\033[0m\n%s", d.elapsed(), b.String())
	return os.WriteFile(filepath.Join(d.out, "soak.txt"), []byte(b.String()), 0o644)
}
