package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// simRun is a scenario's run and what came of it.
type simRun struct {
	sc   simScenario
	env  *simEnv
	w    *simWorld
	j    *simJournal
	shot *simShot
	logs *observer.ObservedLogs

	crashed bool
	// recPlane is the first recovering plane, recoveryCalls the calls it
	// made; recoveryCrashed says it crashed.
	recPlane        *simPlane
	recoveryCalls   int
	recoveryCrashed bool
	migRes          Result
	migErr          error
	// took is how long Migrate ran (until it returned or crashed).
	took     time.Duration
	outcome  Outcome
	gen      uint64
	recovers int
	recErr   error
}

var errSimTrigger = errors.New("injected failure (the scenario's trigger)")

func simOptions(cfg simConfig, log *zap.Logger) []Option {
	skew := time.Duration(0)
	if cfg.skew != 0 {
		skew = simSkewBound
	}
	return []Option{WithLeaseTTL(simTTL), WithClockSkew(skew), WithProbe(time.Millisecond), WithLastLook(time.Millisecond),
		WithPreflight(time.Millisecond), WithAnnounce(1, time.Millisecond), WithStepTimeout(simStepTimeout),
		WithStaging(cfg.staged), WithLogger(log)}
}

// newSimMigrationWorld is the source a running the container (its address
// pinned at simGen) and the destination b, sharing storage or not.
func newSimMigrationWorld(cfg simConfig) *simWorld {
	w := newSimWorld(simSpec(), true)
	var shared *simStore
	if cfg.shared {
		shared = &simStore{name: "nfs-1", images: map[ImageName]simImage{}}
	}
	a := w.addHost("a", shared)
	b := w.addHost("b", shared)
	switch {
	case cfg.skew > 0:
		a.clock, b.clock = simSkewAhead, -simSkewBehind
	case cfg.skew < 0:
		a.clock, b.clock = -simSkewBehind, simSkewAhead
	}
	// Not in any registry: the destination imports it from the source.
	w.placeRunning(a, simGen, true)
	return w
}

// runClient runs the client and the monitor (every millisecond) until
// stop; it returns once the client has had a few answers.
func runClient(w *simWorld, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				w.clientTick()
			}
		}
	}()
	for w.Acks() < 3 {
		time.Sleep(time.Millisecond)
	}
	return &wg
}

// simRunOptions tune a run beyond its scenario.
type simRunOptions struct {
	rec        *simRecorder
	latency    func(host, method, args string) time.Duration
	beforeStep func(stepKey)
}

// runMigration runs one scenario to its end: the migration with its fault,
// the heal, the recovery by a new plane, and the wait until every lease
// left armed has lapsed.
func runMigration(t *testing.T, sc simScenario, w *simWorld, o simRunOptions) *simRun {
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	env := newSimEnv(w, simDelay, simBrief)
	rec := o.rec
	env.rec, env.latency = rec, o.latency
	r := &simRun{sc: sc, env: env, w: w, j: &simJournal{recs: map[string]Record{}}, logs: logs}
	stop := make(chan struct{})
	client := runClient(w, stop)
	t.Cleanup(func() {
		close(stop)
		client.Wait()
		close(env.end)
	})
	spec := w.spec
	ctx := context.Background()

	p1 := newSimPlane("plane-1")
	var armed bool
	hook := func(ctx context.Context, ev Event) error {
		if p1.crashed() {
			<-env.end
			return errors.New("plane crashed")
		}
		k := stepKey{ev.Step, ev.Undo}
		if rec != nil {
			rec.enter(ctx, k)
		}
		w.mu.Lock()
		w.logf("plane-1 step %s (done %s, generation %d)", k, ev.Record.Done, ev.Record.Generation)
		w.mu.Unlock()
		if o.beforeStep != nil {
			o.beforeStep(k)
		}
		if !armed && sc.fault != faultNone && k == sc.at {
			armed = true
			switch sc.fault {
			case faultCrashHook:
				p1.crash()
				<-env.end
				return errors.New("plane crashed")
			case faultPartition, faultDead, faultDeadBrief:
				env.links[sc.host].start(sc.fault)
			case faultStranger:
				env.stranger()
			default:
				done := ctx.Done()
				r.shot = &simShot{kind: sc.fault, index: sc.call,
					match: func(ctx context.Context, _ string) bool { return ctx.Done() == done }}
				env.links[sc.host].arm(r.shot)
			}
		}
		if sc.trigger != StepNone && !ev.Undo && ev.Step == sc.trigger {
			return errSimTrigger
		}
		return nil
	}
	switch {
	case sc.at.step != StepNone || sc.fault == faultNone:
	case sc.fault == faultStranger:
		env.stranger()
	default:
		env.links[sc.host].start(sc.fault)
	}
	m1, err := New(env.hosts(p1), simJournalView{j: r.j, plane: p1, end: env.end}, append(simOptions(sc.cfg, log.Named("plane-1")), WithHook(hook))...)
	if err != nil {
		t.Fatal(err)
	}
	type ret struct {
		res Result
		err error
	}
	done := make(chan ret, 1)
	began := time.Now()
	go func() {
		res, err := m1.Migrate(ctx, spec, "a", "b", simGen)
		done <- ret{res, err}
	}()
	select {
	case x := <-done:
		r.migRes, r.migErr, r.outcome, r.gen = x.res, x.err, x.res.Outcome, x.res.Record.Generation
		if x.res.Outcome == "" && x.err != nil && r.j.len() == 0 {
			// Refused before anything was journalled or done.
			r.outcome, r.gen = Reverted, simGen
		}
	case <-p1.dead:
		r.crashed = true
	case <-time.After(30 * time.Second):
		t.Fatalf("Migrate did not return\n%s", w.Trace())
	}
	r.took = time.Since(began)
	w.mu.Lock()
	w.logf("plane-1 ends: crashed %v, outcome %q, generation %d, err %v", r.crashed, r.outcome, r.gen, r.migErr)
	w.mu.Unlock()

	// A plane settles what the journal holds (Recover): once while the
	// faults last, as the plane retries unsettled migrations, then after
	// they heal. Each attempt is a new Migrator on the same journal: a
	// plane restarted after a crash, or the same one retrying (a Migrator
	// keeps nothing between calls). The first may crash too.
	recover := func() {
		r.recovers++
		p := newSimPlane(fmt.Sprintf("plane-%d", r.recovers+1))
		m, err := New(env.hosts(p), simJournalView{j: r.j, plane: p, end: env.end}, simOptions(sc.cfg, log.Named(p.name))...)
		if err != nil {
			t.Fatal(err)
		}
		if r.recovers == 1 {
			r.recPlane = p
			if sc.recoveryCrash > 0 {
				env.crashAt.Store(&simCrashAt{plane: p, index: sc.recoveryCrash - 1})
			}
		}
		type ret struct {
			results []Result
			err     error
		}
		done := make(chan ret, 1)
		go func() {
			results, err := m.Recover(ctx)
			done <- ret{results, err}
		}()
		select {
		case x := <-done:
			r.recErr = x.err
			for _, res := range x.results {
				if res.Record.Spec.ID == spec.ID && res.Outcome != "" {
					r.outcome, r.gen = res.Outcome, res.Record.Generation
				}
			}
		case <-p.dead:
			r.recoveryCrashed = true
		case <-time.After(30 * time.Second):
			t.Fatalf("Recover did not return\n%s", w.Trace())
		}
		w.mu.Lock()
		w.logf("%s recover %d: crashed %v, outcome %q, generation %d, err %v", p.name, r.recovers, p.crashed(), r.outcome, r.gen, r.recErr)
		w.mu.Unlock()
	}
	if r.j.len() > 0 {
		recover()
	}
	env.heal()
	for r.j.len() > 0 && r.recovers < 4 {
		recover()
	}
	if r.recPlane != nil {
		r.recoveryCalls = env.callsOf(r.recPlane)
	}
	// Late deliveries land (maybe after the recovery), and whatever lease
	// was left armed lapses.
	env.delayed.Wait()
	time.Sleep(simTTL + 50*time.Millisecond)
	return r
}

// verify checks the rules at the end of a run (and that the fault struck
// the call it was meant for).
func (r *simRun) verify(t *testing.T) {
	t.Helper()
	for _, p := range r.problems() {
		t.Errorf("%s: %s", r.sc, p)
	}
	if t.Failed() || os.Getenv("SIM_TRACE") != "" {
		t.Logf("migrate: %v\nrecover: %v\nworld:\n%s\nplane log:\n%s", r.migErr, r.recErr, r.w.Trace(), simLogs(r.logs))
	}
}

// problems are the rules the run broke.
func (r *simRun) problems() (out []string) {
	sc, w := r.sc, r.w
	fail := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if r.shot != nil {
		if !r.shot.fired {
			fail("the fault never struck (%s made %d calls to %s)", sc.at, r.shot.seen, sc.host)
		} else if sc.method != "" && r.shot.method != sc.method {
			fail("the fault struck %s, not %s", r.shot.method, sc.method)
		}
	}
	for _, v := range w.Violations() {
		fail("at %v: %s: %s (after %q)", v.at, v.kind, v.msg, v.cause)
	}
	if n := r.j.len(); n > 0 {
		fail("journal still holds %d record(s) after %d recoveries", n, r.recovers)
	}
	want := map[Outcome]string{Migrated: "b", Reverted: "a"}[r.outcome]
	if want == "" {
		fail("outcome %q after the recovery", r.outcome)
	}
	before := w.Acks()
	w.mu.Lock()
	serving := w.servingHosts()
	var names []string
	for _, h := range serving {
		names = append(names, h.name)
	}
	if len(serving) != 1 {
		fail("%d copies serve at the end (%v)", len(serving), names)
	} else if h := serving[0]; h.name != want && want != "" {
		fail("the copy on %s serves, but the outcome is %s", h.name, r.outcome)
	} else {
		l := h.nets[w.spec.ID].lease
		if !l.pinned {
			fail("the serving copy's lease on %s is not pinned", h.name)
		}
		if l.gen != r.gen {
			fail("the lease on %s has generation %d, the plane recorded %d", h.name, l.gen, r.gen)
		}
		if c := h.cts[w.spec.ID]; c.counter < w.maxAcked {
			fail("the serving copy holds %d, %d was acknowledged", c.counter, w.maxAcked)
		}
	}
	// Settled means cleaned up: the other host keeps nothing of it.
	for _, name := range w.hostNames() {
		if name == want {
			continue
		}
		if st := w.hosts[name].status(w.spec.ID); st.Status != Absent || st.Network {
			fail("leftover on %s: %s, network %v", name, st.Status, st.Network)
		}
	}
	w.mu.Unlock()
	if len(serving) == 1 {
		// Three answers take the client 3 ms; the margin is for a loaded
		// machine running hundreds of scenarios at once.
		deadline := time.Now().Add(5 * time.Second)
		for w.Acks() < before+3 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if w.Acks() < before+3 {
			fail("the client gets no answer at the end")
		}
	}
	return out
}

func simLogs(l *observer.ObservedLogs) string {
	var b strings.Builder
	for _, e := range l.All() {
		fmt.Fprintf(&b, "%s %s %s", e.Time.Format("15:04:05.000000"), e.LoggerName, e.Message)
		for _, f := range e.Context {
			switch {
			case f.String != "":
				fmt.Fprintf(&b, " %s=%s", f.Key, f.String)
			case f.Interface != nil:
				fmt.Fprintf(&b, " %s=%v", f.Key, f.Interface)
			default:
				fmt.Fprintf(&b, " %s=%d", f.Key, f.Integer)
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}
