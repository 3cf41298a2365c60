package migrate

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// Handoffs (lease.go) under the same faults: the address of a stateless
// container moves from its copy on a to a replica already running on b.

const simHandoffGen = 5

// simHandoffScenario strikes the call-th call Handoff makes to host (its
// lease renewals aside, which run on their own clock).
type simHandoffScenario struct {
	// skew as in simConfig: the hosts' clocks apart, either way.
	skew   int
	host   string
	call   int
	method string
	fault  simFault
}

func (sc simHandoffScenario) String() string {
	clocks := map[int]string{0: "", 1: "source-ahead/", -1: "source-behind/"}[sc.skew]
	if sc.fault == faultNone {
		return clocks + "none"
	}
	return fmt.Sprintf("%s%s.%d.%s/%s", clocks, sc.host, sc.call, sc.method, sc.fault)
}

// simHandoffFaults strike one call; a lasting fault starts as that call
// reaches the host. (A plane crash has nothing to recover here: the caller
// journals the generations a handoff may grant, and no journal record of
// it exists for Recover.)
var simHandoffFaults = []simFault{faultDrop, faultLost, faultDelay, faultDelayLate, faultPartition, faultDead, faultDeadBrief, faultCutAfter, faultDieAfter}

type simHandoffRun struct {
	sc   simHandoffScenario
	env  *simEnv
	w    *simWorld
	shot *simShot
	logs *observer.ObservedLogs
	at   string
	gen  uint64
	err  error
}

// simRenewal says a Lease call is a renewal: renewals alone run under a
// short deadline of their own (TTL/4 plus the skew); Handoff's own calls
// carry its caller's context, bounded by the step timeout.
func simRenewal(ctx context.Context, method string) bool {
	dl, ok := ctx.Deadline()
	return method == "Lease" && ok && time.Until(dl) <= simTTL/4+simSkewBound
}

func newSimHandoffWorld(b simBreak, skew int) *simWorld {
	w := newSimWorld(simSpec(), false)
	w.broken = b
	a := w.addHost("a", nil)
	bh := w.addHost("b", nil)
	switch {
	case skew > 0:
		a.clock, bh.clock = simSkewAhead, -simSkewBehind
	case skew < 0:
		a.clock, bh.clock = -simSkewBehind, simSkewAhead
	}
	w.placeRunning(a, simHandoffGen, true)
	w.placeRunning(bh, 0, false)
	return w
}

func runHandoff(t *testing.T, sc simHandoffScenario, w *simWorld, rec func(host, method string)) *simHandoffRun {
	core, logs := observer.New(zap.DebugLevel)
	env := newSimEnv(w, simDelay, simBrief)
	// A handoff waits for a destination that holds the address unsettled
	// to answer: its lasting faults heal on their own, after a while.
	env.healAfter = 3 * simTTL
	r := &simHandoffRun{sc: sc, env: env, w: w, logs: logs}
	stop := make(chan struct{})
	client := runClient(w, stop)
	t.Cleanup(func() {
		close(stop)
		client.Wait()
		close(env.end)
	})
	p := newSimPlane("plane")
	hosts := env.hosts(p)
	if rec != nil {
		for name, h := range hosts {
			hosts[name] = simRecordingHost{Host: h, rec: func(ctx context.Context, method string) {
				if !simRenewal(ctx, method) {
					rec(name, method)
				}
			}}
		}
	}
	if sc.fault != faultNone {
		r.shot = &simShot{kind: sc.fault, index: sc.call, match: func(ctx context.Context, method string) bool { return !simRenewal(ctx, method) }}
		env.links[sc.host].arm(r.shot)
	}
	m, err := New(hosts, simJournalView{j: &simJournal{recs: map[string]Record{}}, plane: p, end: env.end}, simOptions(simConfig{staged: true, skew: sc.skew}, zap.New(core))...)
	if err != nil {
		t.Fatal(err)
	}
	r.at, r.gen, r.err = m.Handoff(context.Background(), w.spec, "a", "b", simHandoffGen)
	w.mu.Lock()
	w.logf("handoff ends at %s, generation %d: %v", r.at, r.gen, r.err)
	w.mu.Unlock()
	env.heal()
	env.delayed.Wait()
	time.Sleep(simTTL + 50*time.Millisecond)
	return r
}

// simRecordingHost notes each call before it is made.
type simRecordingHost struct {
	Host
	rec func(ctx context.Context, method string)
}

func (h simRecordingHost) Lease(ctx context.Context, id string, l Lease) (LeaseState, error) {
	h.rec(ctx, "Lease")
	return h.Host.Lease(ctx, id, l)
}

func (h simRecordingHost) ReleaseAddress(ctx context.Context, id string, ip netip.Prefix) (StepResult, error) {
	h.rec(ctx, "ReleaseAddress")
	return h.Host.ReleaseAddress(ctx, id, ip)
}

func (h simRecordingHost) ClaimAddress(ctx context.Context, id string, ip netip.Prefix, opts ClaimOptions) (StepResult, error) {
	h.rec(ctx, "ClaimAddress")
	return h.Host.ClaimAddress(ctx, id, ip, opts)
}

func (h simRecordingHost) Announce(ctx context.Context, id string, ip netip.Addr, opts AnnounceOptions) (StepResult, error) {
	h.rec(ctx, "Announce")
	return h.Host.Announce(ctx, id, ip, opts)
}

// verify: at every instant at most one copy served; at the end exactly
// one serves, pinned, where Handoff said, with the generation it said.
func (r *simHandoffRun) verify(t *testing.T) {
	t.Helper()
	for _, p := range r.problems() {
		t.Errorf("%s: %s", r.sc, p)
	}
	if t.Failed() || os.Getenv("SIM_TRACE") != "" {
		t.Logf("handoff: at %s, generation %d: %v\nworld:\n%s\nplane log:\n%s", r.at, r.gen, r.err, r.w.Trace(), simLogs(r.logs))
	}
}

func (r *simHandoffRun) problems() (out []string) {
	w := r.w
	fail := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if r.shot != nil {
		if !r.shot.fired {
			fail("the fault never struck")
		} else if r.shot.method != r.sc.method {
			fail("the fault struck %s, not %s", r.shot.method, r.sc.method)
		}
	}
	for _, v := range w.Violations() {
		fail("at %v: %s: %s (after %q)", v.at, v.kind, v.msg, v.cause)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.servingHosts()
	if len(s) != 1 {
		fail("%d copies serve at the end; Handoff said %s", len(s), r.at)
		return
	}
	h := s[0]
	if h.name != r.at {
		fail("the copy on %s serves; Handoff said %s", h.name, r.at)
	}
	// A failed handoff may name a generation its give-back never got to
	// grant (the caller journals it before the call): the plane's next
	// grants, from it on, are still accepted.
	if l := h.nets[w.spec.ID].lease; !l.pinned || l.gen > r.gen || (r.err == nil && l.gen != r.gen) {
		fail("lease on %s: pinned %v, generation %d; Handoff said %d (%v)", h.name, l.pinned, l.gen, r.gen, r.err)
	}
	return out
}

// TestSimHandoffFaults: each fault at each call a handoff makes.
func TestSimHandoffFaults(t *testing.T) {
	var mu sync.Mutex
	calls := map[string][]string{}
	base := runHandoff(t, simHandoffScenario{}, newSimHandoffWorld(simBreak{}, 0), func(host, method string) {
		mu.Lock()
		defer mu.Unlock()
		calls[host] = append(calls[host], method)
	})
	base.verify(t)
	if base.at != "b" || base.err != nil || base.gen != simHandoffGen+1 {
		t.Fatalf("fault-free handoff: at %s, generation %d: %v; want b, %d", base.at, base.gen, base.err, simHandoffGen+1)
	}
	want := map[string][]string{"a": {"Lease", "ReleaseAddress"}, "b": {"ClaimAddress", "Lease", "Announce"}}
	for h := range want {
		if !slices.Equal(calls[h], want[h]) {
			t.Fatalf("fault-free handoff called %s: %v, want %v", h, calls[h], want[h])
		}
	}
	var scs []simHandoffScenario
	for _, skew := range []int{0, 1, -1} {
		for _, host := range []string{"a", "b"} {
			for i, method := range calls[host] {
				for _, f := range simHandoffFaults {
					scs = append(scs, simHandoffScenario{skew: skew, host: host, call: i, method: method, fault: f})
				}
			}
		}
	}
	ends := map[string]int{}
	t.Run("all", func(t *testing.T) {
		for _, sc := range scs {
			t.Run(sc.String(), func(t *testing.T) {
				t.Parallel()
				r := runHandoff(t, sc, newSimHandoffWorld(simBreak{}, sc.skew), nil)
				r.verify(t)
				mu.Lock()
				ends[fmt.Sprintf("at %s (error %v)", r.at, r.err != nil)]++
				mu.Unlock()
			})
		}
	})
	t.Logf("%d handoff scenarios: %v", len(scs), ends)
}
