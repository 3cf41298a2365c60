package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/escape-mtd/escape/model"
	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/sensor/events"
	"github.com/escape-mtd/escape/tools/probe"
)

// since is when an action that the audit logged at its end began.
func since(e plane.AuditEvent) time.Time {
	return e.Time.Add(-time.Duration(e.Duration * float64(time.Millisecond)))
}

// clientOutage waits for the client's report of the outage that an action
// begun at t0 caused. ok is false if there was none (a gap shorter than
// three request intervals).
func (d *demo) clientOutage(ctx context.Context, t0 time.Time, wait time.Duration) (probe.Event, bool, error) {
	var out probe.Event
	err := d.waitFor(ctx, "the client's view", wait, func() (bool, error) {
		evs, err := d.client()
		for _, e := range evs {
			if e.Event == "outage" && e.End.After(t0) && e.Time.After(d.clientSeen) {
				out = e
				d.clientSeen = e.Time
				return true, nil
			}
		}
		return false, err
	})
	if err != nil && ctx.Err() == nil {
		return probe.Event{}, false, nil
	}
	return out, err == nil, err
}

func (d *demo) reconnectedSince(t0 time.Time) (bool, error) {
	evs, err := d.client()
	for _, e := range evs {
		if e.Event == "connected" && e.Time.After(t0) {
			return true, err
		}
	}
	return false, err
}

func (d *demo) afterRollback(ctx context.Context, dec plane.AuditEvent) error {
	t0 := since(dec)
	if err := d.waitFor(ctx, "redis to run again", 60*time.Second, func() (bool, error) {
		c, err := d.status(ctx)
		return err == nil && c.State == "running", nil
	}); err != nil {
		return err
	}
	line := fmt.Sprintf("rollback on the same host: plane downtime %v", time.Duration(dec.Duration*float64(time.Millisecond)).Round(time.Millisecond))
	if o, ok, err := d.clientOutage(ctx, t0, 20*time.Second); err != nil {
		return err
	} else if ok {
		line += fmt.Sprintf("; client gap %.0f ms, reset %v (a rollback closes connections), state %s, data intact %v",
			o.GapMS, o.Reset, o.State, o.Intact != nil && *o.Intact)
	}
	d.note("%s", line)
	d.summary = append(d.summary, line)
	// The restored copy has a new cgroup: settle, before the next attack,
	// waits until the sensor watches it (it keeps the learned profile).
	return nil
}

func (d *demo) afterMigration(ctx context.Context, dec plane.AuditEvent, from string) (plane.AuditEvent, error) {
	t0 := since(dec)
	d.step("8/9 live migration: the prey moves away from the compromised host, keeping its address")
	var mig plane.AuditEvent
	evs, err := d.audit()
	if err != nil {
		return mig, err
	}
	for _, e := range evs {
		if e.Kind == "action" && e.Action == "migrate" && e.Container == serviceID && !e.Time.Before(t0) {
			mig = e
		}
	}
	c, err := d.status(ctx)
	if err != nil {
		return mig, err
	}
	if addr, _, _ := strings.Cut(c.IP, "/"); c.Host == from || addr != serviceIP || c.State != "running" {
		return mig, fmt.Errorf("after the migration redis is %s on %s at %s; want running on another host than %s at %s",
			c.State, c.Host, c.IP, from, serviceIP)
	}
	d.note("redis now runs on %s with the same address %s (and MAC); frozen %v; steps (ms): %v", c.Host, c.IP,
		time.Duration(mig.Duration*float64(time.Millisecond)).Round(time.Millisecond), mig.Details["steps_ms"])
	d.step("9/9 the client's connection across the migration")
	// Reconnections up to the last outage already attributed (a rollback's)
	// are that action's.
	after := t0
	if d.clientSeen.After(after) {
		after = d.clientSeen
	}
	o, ok, err := d.clientOutage(ctx, t0, 20*time.Second)
	if err != nil {
		return mig, err
	}
	reconnected, err := d.reconnectedSince(after)
	if err != nil {
		return mig, err
	}
	if reconnected || (ok && o.Reset) {
		return mig, fmt.Errorf("the client's connection did not survive the migration (%+v)", o)
	}
	line := fmt.Sprintf("migration %s -> %s: plane frozen time %v", from, c.Host,
		time.Duration(mig.Duration*float64(time.Millisecond)).Round(time.Millisecond))
	if ok {
		if o.Intact == nil || !*o.Intact || o.State != "kept" {
			return mig, fmt.Errorf("the service lost state in the migration: %+v", o)
		}
		line += fmt.Sprintf("; client gap %.0f ms on the same connection (no reset), counter %d kept, data intact", o.GapMS, o.Counter)
	} else {
		line += "; the client saw no gap longer than 150 ms, on the same connection"
	}
	d.note("%s", line)
	d.summary = append(d.summary, line)
	return mig, nil
}

func (d *demo) summarize() error {
	var b strings.Builder
	fmt.Fprintf(&b, "ESCAPE demo summary (%s, %v in all)\n", time.Now().Format(time.RFC3339), time.Since(d.start).Round(time.Second))
	for _, l := range d.summary {
		fmt.Fprintf(&b, "  - %s\n", l)
	}
	evs, _ := d.events()
	anomalies := 0
	for _, e := range evs {
		if e.Type == events.TypeAnomaly {
			anomalies++
		}
	}
	fmt.Fprintf(&b, "  - sensor: %d anomalous epochs reported; plane: %d rollbacks (%d unprovoked), then a migration (policy N=%d)\n",
		anomalies, d.limit, d.unprovoked, d.limit)
	// The model for this lab: V hosts, one of them (the source) now
	// compromised. Equation 1 (static) against equation 2 (moving).
	m, err := model.New(model.Params{V: float64(len(d.inv.Hosts)), N: 1})
	if err != nil {
		return err
	}
	fmt.Fprintf(&b, "  - model (Section IV, V=%d hosts, N=1 compromised, %s):\n", len(d.inv.Hosts), m.Interpretation())
	for _, t := range []float64{5, 10, 20} {
		ps, err1 := m.Static(t)
		pm, err2 := m.Mobile(t)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("model at t=%v: %v %v", t, err1, err2)
		}
		fmt.Fprintf(&b, "      survival at t=%-3v static %.3f, moving %.3f\n", t, ps, pm)
	}
	fmt.Fprintf(&b, "  - files: %s/{events-h*.jsonl (each host's sensor, SIEM schema), audit.jsonl (plane decisions), client.jsonl, plane.log, agent-h*.log, escape.yaml}\n", d.out)
	fmt.Fprintf(&b, "  - figures: docs/figures/model (Figs 4-10), docs/figures/bosc; benchmarks: BENCHMARKS.md\n")
	fmt.Printf("\n\033[1m%s == summary\033[0m\n%s", d.elapsed(), b.String())
	return os.WriteFile(filepath.Join(d.out, "summary.txt"), []byte(b.String()), 0o644)
}

// settleFor is how long the newest copy of redis must run under the
// sensor's watch before the next attack: the known-calls-only anomalies of a
// restored copy came 0.2-2.5 s after it started (the plane sets them aside
// for its restore_settle), and an attack that lands during a rollback would
// hit a container that is going away.
const settleFor = 2 * time.Second

// settle waits until the newest copy of redis runs, no rollback is under
// way and the sensor has watched it for settleFor, then reports the plane's
// rollbacks since the demo's last accounted decision that no attack of the
// demo caused: false positives on a restored copy, whose first epochs can
// hold behaviour the sensor never learned. The plane counts them toward its
// limit, so they are part of the run, said plainly rather than hidden.
func (d *demo) settle(ctx context.Context) (int, error) {
	err := d.waitFor(ctx, "redis to settle after the rollback", 90*time.Second, func() (bool, error) {
		c, err := d.status(ctx)
		if err != nil || c.State != "running" || c.RollingBack != nil {
			return false, nil
		}
		evs, err := d.events()
		var watched time.Time
		for _, e := range evs {
			if e.Type == events.TypeWatched && e.Container != nil && e.Container.Identity == serviceID {
				watched = e.Time
			}
		}
		return !watched.IsZero() && watched.After(d.decisionStart) && time.Since(watched) >= settleFor, err
	})
	if err != nil {
		return 0, err
	}
	evs, err := d.audit()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range evs {
		if e.Kind != "decision" || e.Container != serviceID || e.Decision == "none" || !e.Time.After(d.decisionSeen) {
			continue
		}
		if e.Decision != "rollback" || e.Outcome != "ok" {
			return n, fmt.Errorf("with no attack running the plane decided %s (%s): %s %s",
				e.Decision, e.Outcome, strings.Join(e.Reasons, "; "), e.Error)
		}
		n++
		d.decisionSeen, d.decisionStart = e.Time, since(e)
		line := fmt.Sprintf("unprovoked rollback (a false positive on the restored copy, no attack running): %s",
			strings.Join(e.Reasons, "; "))
		d.note("%s", line)
		d.summary = append(d.summary, line)
	}
	d.unprovoked += n
	return n, nil
}
