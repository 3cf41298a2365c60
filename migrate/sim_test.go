package migrate

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Model-based fault tests of the migration orchestrator and of Handoff.
//
// Two hosts in memory implement Host (sim_world_test.go, sim_host_test.go);
// every call goes through a fault layer, one per host, and a view per
// plane that a crash freezes (sim_fault_test.go, sim_conn_test.go). A
// client increments the container's counter on whichever copy serves, and
// the world checks, after every change it applies and every millisecond,
// that at most one copy serves and that the newest acknowledged state
// exists as a running copy or a complete dump. A run (sim_run_test.go)
// heals the faults, lets a plane (a new one, after a crash) recover, and
// checks that exactly one copy serves, pinned, where the outcome says, at
// the generation the plane recorded, holding every acknowledged write; that
// the journal is empty and the other host keeps nothing.
//
// The scenarios (here) are drawn from fault-free runs: every call each step
// (forward and undo) makes to each host, struck by each call fault; every
// step, followed by each lasting fault on each host, a plane crash at its
// hook, a stranger on the segment; in each configuration (staged or not,
// shared storage or not, hosts' clocks apart). Handoffs: sim_handoff_test.go.
// The checks' own checks and the known gap: sim_checks_test.go.

const (
	simTTL = 300 * time.Millisecond
	// simDelay is how late a delayed call lands: after its grant's
	// deadline, as a healed partition delivers queued bytes.
	simDelay = 2 * simTTL
	simBrief = simTTL
	// simStepTimeout bounds each step, and so each request's deadline:
	// what the plane waits out after a call goes unanswered, before it
	// acts as if the call never happened.
	simStepTimeout = 5 * time.Second
	simGen         = 7
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The scenarios sleep (leases lapsing) far more than they compute:
	// run many at once unless told otherwise.
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		_ = flag.Set("test.parallel", "128")
	}
	os.Exit(m.Run())
}

func simSpec() Spec {
	return Spec{ID: "db", Image: "escape.local/redis:7", IP: netip.MustParsePrefix("198.18.5.20/15"), MAC: "02:e5:00:00:05:20"}
}

type simConfig struct {
	staged, shared bool
	// skew > 0: the source's clock is simSkewAhead ahead and the
	// destination's simSkewBehind behind the plane's; < 0 the other way
	// round. The plane is told the bound (WithClockSkew).
	skew int
}

const (
	// A host ahead of the plane by less than the TTL still takes grants;
	// one behind by more than lapseMargin lapses them late enough that the
	// plane's waits are safe only through WithClockSkew.
	simSkewAhead  = 200 * time.Millisecond
	simSkewBehind = 400 * time.Millisecond
	simSkewBound  = 450 * time.Millisecond
)

func (c simConfig) String() string {
	s := "unstaged"
	if c.staged {
		s = "staged"
	}
	if c.shared {
		s += "-shared"
	} else {
		s += "-transfer"
	}
	switch {
	case c.skew > 0:
		s += "-source-ahead"
	case c.skew < 0:
		s += "-source-behind"
	}
	return s
}

// simConfigs: staged or not × shared storage or not, with clocks in step;
// and the staged transfer with the hosts' clocks apart, either way.
var simConfigs = []simConfig{{true, true, 0}, {true, false, 0}, {false, true, 0}, {false, false, 0}, {true, false, 1}, {true, false, -1}}

type stepKey struct {
	step Step
	undo bool
}

func (k stepKey) String() string {
	if k.undo {
		return "undo-" + k.step.String()
	}
	return k.step.String()
}

// simScenario is one fault in one migration.
type simScenario struct {
	cfg simConfig
	// trigger is a later step whose hook fails, so that the migration is
	// undone after the fault (StepNone: no trigger).
	trigger Step
	at      stepKey
	host    string // "a" (the source) or "b" (the destination)
	call    int    // which of the step's calls to host the fault strikes
	method  string // that call's method, as the fault-free run made it
	fault   simFault
	// recoveryCrash > 0 crashes the first recovering plane as its
	// recoveryCrash-th call (to any host) is applied.
	recoveryCrash int
}

func (sc simScenario) String() string {
	var b strings.Builder
	b.WriteString(sc.at.String())
	if sc.host != "" {
		b.WriteString("/" + sc.host)
	}
	if sc.method != "" {
		fmt.Fprintf(&b, ".%d.%s", sc.call, sc.method)
	}
	b.WriteString("/" + sc.fault.String())
	if sc.trigger != StepNone {
		b.WriteString("+fail-" + sc.trigger.String())
	}
	if sc.recoveryCrash > 0 {
		fmt.Fprintf(&b, "+recovery-crash-%d", sc.recoveryCrash)
	}
	return b.String()
}

// discover runs a fault-free migration (failed at trigger, if any) and
// returns the calls each step made to each host.
func discover(t *testing.T, cfg simConfig, trigger Step) map[stepKey]map[string][]string {
	rec := &simRecorder{steps: map[<-chan struct{}]stepKey{}, calls: map[stepKey]map[string][]string{}}
	sc := simScenario{cfg: cfg, trigger: trigger}
	r := runMigration(t, sc, newSimMigrationWorld(cfg), simRunOptions{rec: rec})
	r.verify(t)
	want := Migrated
	if trigger != StepNone {
		want = Reverted
	}
	if r.outcome != want || r.recovers != 0 {
		t.Fatalf("%s, failed at %s: outcome %s after %d recoveries, want %s at once (%v)", cfg, trigger, r.outcome, r.recovers, want, r.migErr)
	}
	return rec.calls
}

// simTriggers are where the fault-free runs that list the undo's calls
// fail: before the dump (the source still runs) and just before the
// commit (everything to undo).
var simTriggers = []Step{StepCheckpoint, StepCommit}

// simScenarios draws every scenario of cfg from its fault-free runs: each
// call fault at each call each step (forward or undo) makes to each host;
// each lasting fault from each step on, on each host; a crash at each
// step's hook. Forward faults before the commit run twice: alone, and with
// the commit failing afterwards, so that the undo runs after the fault.
func simScenarios(t *testing.T, cfg simConfig) (out []simScenario, na []string) {
	runs := map[Step]map[stepKey]map[string][]string{StepNone: discover(t, cfg, StepNone)}
	for _, tr := range simTriggers {
		runs[tr] = discover(t, cfg, tr)
	}
	add := func(trigger Step, k stepKey, calls map[string][]string) {
		for _, host := range []string{"a", "b"} {
			if len(calls[host]) == 0 {
				na = append(na, fmt.Sprintf("%s: %s (failing at %s) makes no call to %s", cfg, k, trigger, host))
			}
			for i, method := range calls[host] {
				for _, f := range callFaults {
					out = append(out, simScenario{cfg: cfg, trigger: trigger, at: k, host: host, call: i, method: method, fault: f})
				}
			}
			for _, f := range lastingFaults {
				out = append(out, simScenario{cfg: cfg, trigger: trigger, at: k, host: host, fault: f})
			}
		}
		out = append(out, simScenario{cfg: cfg, trigger: trigger, at: k, fault: faultCrashHook},
			simScenario{cfg: cfg, trigger: trigger, at: k, fault: faultStranger})
	}
	for _, host := range []string{"a", "b"} {
		for _, f := range lastingFaults {
			out = append(out, simScenario{cfg: cfg, at: stepKey{}, host: host, fault: f})
		}
	}
	out = append(out, simScenario{cfg: cfg, at: stepKey{}, fault: faultStranger})
	for _, k := range sortedKeys(runs[StepNone]) {
		if k.undo {
			t.Fatalf("%s: a fault-free migration ran %s", cfg, k)
		}
		add(StepNone, k, runs[StepNone][k])
		if k.step < StepCommit {
			add(StepCommit, k, runs[StepNone][k])
		}
	}
	for _, tr := range simTriggers {
		for _, k := range sortedKeys(runs[tr]) {
			if k.undo {
				add(tr, k, runs[tr][k])
			}
		}
	}
	return out, na
}

func sortedKeys[V any](m map[stepKey]V) []stepKey {
	var ks []stepKey
	for k := range m {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b stepKey) int {
		if a.undo != b.undo {
			if a.undo {
				return 1
			}
			return -1
		}
		if a.undo {
			return int(b.step) - int(a.step) // undo runs backwards
		}
		return int(a.step) - int(b.step)
	})
	return ks
}

// TestSimMigrationHappyPath: no fault, every configuration: migrated at
// once, every rule kept, the steps each configuration must run.
func TestSimMigrationHappyPath(t *testing.T) {
	for _, cfg := range simConfigs {
		t.Run(cfg.String(), func(t *testing.T) {
			t.Parallel()
			calls := discover(t, cfg, StepNone)
			var steps []string
			for _, k := range sortedKeys(calls) {
				steps = append(steps, k.String())
			}
			want := []string{"image", "stage", "checkpoint", "transfer", "prepare", "move-address", "restore", "commit", "announce", "remove-source"}
			if !cfg.staged {
				want = slices.DeleteFunc(want, func(s string) bool { return s == "stage" })
			}
			if cfg.shared {
				want = slices.DeleteFunc(want, func(s string) bool { return s == "transfer" })
			}
			if !slices.Equal(steps, want) {
				t.Errorf("steps %v, want %v", steps, want)
			}
		})
	}
}

// simStats counts what the scenarios did, for the summary.
type simStats struct {
	mu       sync.Mutex
	n        int
	outcomes map[Outcome]int
	kinds    map[simFault]int
	recover  int
	crashed  int
	// refused counts the runs in which an agent refused a late request.
	refused int
	// undone counts the migrations plane-1 undid itself (reverted, not
	// crashed), undoneTook the time Migrate took in them, undoneMax the
	// longest.
	undone                int
	undoneTook, undoneMax time.Duration
}

func (s *simStats) add(r *simRun) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	s.outcomes[r.outcome]++
	s.kinds[r.sc.fault]++
	if r.recovers > 0 {
		s.recover++
	}
	if r.crashed {
		s.crashed++
	}
	if !r.crashed && r.migErr != nil && r.migRes.Outcome == Reverted {
		s.undone++
		s.undoneTook += r.took
		s.undoneMax = max(s.undoneMax, r.took)
	}
	if strings.Contains(r.w.Trace(), "-> refused") {
		s.refused++
	}
}

// simJitter is a network's: each call takes up to 300 µs to land, so that
// a renewal and a step's call may land in either order.
func simJitter(host, method, args string) time.Duration {
	return rand.N(300 * time.Microsecond)
}

// TestSimMigrationFaults runs every scenario of every configuration; then,
// for each crash at a step's hook, the same crash again with the
// recovering plane crashing too, after each call it makes in turn (a third
// plane recovers).
func TestSimMigrationFaults(t *testing.T) {
	stats := &simStats{outcomes: map[Outcome]int{}, kinds: map[simFault]int{}}
	var na []string
	var mu sync.Mutex
	recoveryCalls := map[string]int{}
	var crashes []simScenario
	start := time.Now()
	t.Run("all", func(t *testing.T) {
		for _, cfg := range simConfigs {
			scs, skipped := simScenarios(t, cfg)
			na = append(na, skipped...)
			if len(scs) < 300 {
				t.Errorf("%s: only %d scenarios", cfg, len(scs))
			}
			t.Run(cfg.String(), func(t *testing.T) {
				for _, sc := range scs {
					t.Run(sc.String(), func(t *testing.T) {
						t.Parallel()
						r := runMigration(t, sc, newSimMigrationWorld(sc.cfg), simRunOptions{latency: simJitter})
						r.verify(t)
						stats.add(r)
						if sc.fault == faultCrashHook {
							mu.Lock()
							crashes = append(crashes, sc)
							recoveryCalls[sc.cfg.String()+"/"+sc.String()] = r.recoveryCalls
							mu.Unlock()
						}
					})
				}
			})
		}
	})
	var struck, missed atomic.Int32
	t.Run("recovery-crash", func(t *testing.T) {
		for _, base := range crashes {
			n := recoveryCalls[base.cfg.String()+"/"+base.String()]
			if n == 0 {
				t.Errorf("%s/%s: the recovering plane made no call", base.cfg, base)
			}
			for i := 1; i <= n; i++ {
				sc := base
				sc.recoveryCrash = i
				t.Run(sc.cfg.String()+"/"+sc.String(), func(t *testing.T) {
					t.Parallel()
					r := runMigration(t, sc, newSimMigrationWorld(sc.cfg), simRunOptions{latency: simJitter})
					r.verify(t)
					if !r.recoveryCrashed {
						// Timing decides how many calls a recovery makes (a
						// late request refused is one call fewer): this run
						// made fewer than the first. It is still verified;
						// the share that did crash is checked below.
						t.Logf("%s: the recovering plane did not crash (it made %d calls)", sc, r.recoveryCalls)
						missed.Add(1)
						return
					}
					struck.Add(1)
					stats.add(r)
				})
			}
		}
	})
	if n, m := struck.Load(), missed.Load(); m*50 > n+m {
		t.Errorf("only %d of %d recovery-crash scenarios crashed the recovering plane: the fault matrix no longer reaches recovery", n, n+m)
	}
	t.Logf("%d scenarios (%d with the recovering plane crashing too) in %v: outcomes %v; by fault %v; %d needed a recovery, %d crashed the plane; in %d an agent refused a late request",
		stats.n, struck.Load(), time.Since(start).Round(time.Millisecond), stats.outcomes, stats.kinds, stats.recover, stats.crashed, stats.refused)
	if stats.undone > 0 {
		t.Logf("%d migrations undone by plane-1 itself: Migrate took %v on average, %v at most", stats.undone,
			(stats.undoneTook / time.Duration(stats.undone)).Round(time.Millisecond), stats.undoneMax.Round(time.Millisecond))
	}
	t.Logf("not applicable (no call to strike):\n%s", strings.Join(na, "\n"))
}
