package migrate

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSimPinRacesRenewal: the destination's armed lease is renewed every
// TTL/4 until the commit pins it. A renewal sent just before the pin and
// applied just after it (two requests in flight at once, which an agent
// handles concurrently) must not re-arm the pinned lease: it would lapse,
// and the migrated copy stop serving with nothing to pin it again.
func TestSimPinRacesRenewal(t *testing.T) {
	for _, cfg := range simConfigs {
		t.Run(cfg.String(), func(t *testing.T) {
			t.Parallel()
			r := runMigration(t, simScenario{cfg: cfg}, newSimMigrationWorld(cfg), simPinRace())
			r.verify(t)
			if r.outcome != Migrated {
				t.Errorf("outcome %s, want migrated", r.outcome)
			}
		})
	}
}

// simPinRace has a renewal of the destination's lease in flight as the
// commit pins it.
func simPinRace() simRunOptions {
	return simRunOptions{
		// The destination's renewals take 60 ms to land.
		latency: func(host, method, args string) time.Duration {
			if host == "b" && method == "Lease" && strings.Contains(args, "arm") {
				return 60 * time.Millisecond
			}
			return 0
		},
		// The commit starts while a renewal (every 75 ms) is in flight.
		beforeStep: func(k stepKey) {
			if k == (stepKey{step: StepCommit}) {
				time.Sleep(simTTL/4 + 30*time.Millisecond)
			}
		},
	}
}

// TestSimMonitorCatches: the checks are not vacuous. Hosts that break
// what the orchestrator relies on, each in a scenario where it matters,
// must be caught, by the monitor or the final checks.
func TestSimMonitorCatches(t *testing.T) {
	cfg := simConfig{staged: true, shared: true}
	releaseDropped := simScenario{cfg: cfg, at: stepKey{step: StepMoveAddress}, host: "a", method: "ReleaseAddress", fault: faultDrop}
	for _, tc := range []struct {
		name   string
		broken simBreak
		sc     simScenario
		opts   simRunOptions
		want   string
	}{
		// The source's release goes unanswered: the address moves once
		// its lease has lapsed, which here it never does (the source's
		// copy is dumped by then: its namespace answers ARP).
		{"armed-lease-never-lapses", simBreak{ignoreExpiry: true}, releaseDropped, simRunOptions{}, "two-answering"},
		// A renewal of the destination's armed lease lands after the pin:
		// refused as stale, unless generations count for nothing.
		{"stale-generation-accepted", simBreak{ignoreGeneration: true}, simScenario{cfg: cfg}, simPinRace(), "0 copies serve at the end"},
		{"pin-lapses", simBreak{pinLapses: simTTL}, simScenario{cfg: cfg}, simRunOptions{}, "0 copies serve at the end"},
		{"dump-loses-a-write", simBreak{dumpForgets: true}, simScenario{cfg: cfg}, simRunOptions{}, "state-lost"},
		{"dump-loses-a-write-client", simBreak{dumpForgets: true}, simScenario{cfg: cfg}, simRunOptions{}, "lost-write"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newSimMigrationWorld(tc.sc.cfg)
			w.broken = tc.broken
			r := runMigration(t, tc.sc, w, tc.opts)
			got := r.problems()
			if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("%s not caught: want %q among %q\n%s", tc.name, tc.want, got, w.Trace())
			}
		})
	}
	for _, tc := range []struct {
		name   string
		broken simBreak
		sc     simHandoffScenario
	}{
		// A grant delayed past its deadline lands on a handoff's
		// destination after the address went back to the source: refused,
		// unless the deadline counts for nothing.
		{"late-grant-accepted", simBreak{ignoreNotAfter: true}, simHandoffScenario{host: "b", method: "ClaimAddress", fault: faultDelay}},
		// The source's release goes unanswered; its running replica keeps
		// serving past the lapse the address waited for.
		{"armed-lease-never-lapses-handoff", simBreak{ignoreExpiry: true}, simHandoffScenario{host: "a", call: 1, method: "ReleaseAddress", fault: faultDrop}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runHandoff(t, tc.sc, newSimHandoffWorld(tc.broken, 0), nil)
			got := r.problems()
			if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, "two-serving") }) {
				t.Errorf("not caught: want two-serving among %q\n%s", got, r.w.Trace())
			}
		})
	}
}

// TestSimLateRequestsAreFenced: a request a healed partition delivers
// late used to be applied whenever it landed (only lease grants carried a
// deadline the agent enforced). Two single faults showed it, the smallest
// cases the matrix found:
//
//   - the dump's request (Checkpoint with Exit) goes unanswered; the
//     migration is undone, the source still running, and pinned again;
//     the request lands and stops the source: no copy served.
//   - the source's ReleaseAddress goes unanswered; the address moves once
//     the source's lease has lapsed; the commit fails and the undo gives
//     the address back to the source; the release lands and takes it away:
//     no copy served.
//
// Now every request carries its deadline, which the agent refuses it
// after, and the plane waits out the deadline of a call it left unanswered
// before it undoes anything on that host. Either the late request lands
// while the plane waits (delay: the undo then sees what it did), or it
// arrives after its deadline and is refused (delay-late): both end with
// exactly one copy serving, on the source.
func TestSimLateRequestsAreFenced(t *testing.T) {
	cfg := simConfig{staged: true, shared: true}
	for _, f := range []simFault{faultDelay, faultDelayLate} {
		for _, sc := range []simScenario{
			{cfg: cfg, at: stepKey{step: StepCheckpoint}, host: "a", call: 1, method: "Checkpoint", fault: f},
			{cfg: cfg, at: stepKey{step: StepMoveAddress}, host: "a", method: "ReleaseAddress", fault: f, trigger: StepCommit},
		} {
			t.Run(sc.String(), func(t *testing.T) {
				t.Parallel()
				r := runMigration(t, sc, newSimMigrationWorld(cfg), simRunOptions{})
				r.verify(t)
				if r.outcome != Reverted {
					t.Errorf("outcome %s, want reverted", r.outcome)
				}
				trace := r.w.Trace()
				landed := strings.Contains(trace, "a late "+sc.method)
				refused := strings.Contains(trace, "-> refused")
				switch {
				case !landed:
					t.Errorf("the late %s never landed\n%s", sc.method, trace)
				case f == faultDelayLate && !refused:
					t.Errorf("the %s delivered after its deadline was not refused\n%s", sc.method, trace)
				case f == faultDelay && refused:
					t.Errorf("the %s delivered before its deadline was refused\n%s", sc.method, trace)
				}
				// The undo waited for the request's deadline (the step
				// timeout) before it acted.
				if r.took < simStepTimeout {
					t.Errorf("Migrate returned after %v: it cannot have waited out the step timeout %v", r.took, simStepTimeout)
				}
				t.Logf("Migrate took %v", r.took.Round(time.Millisecond))
			})
		}
	}
}
