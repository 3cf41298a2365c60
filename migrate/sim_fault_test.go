package migrate

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Faults between the plane and the simulated hosts (sim_world_test.go):
// every Host call goes through a simConn, one per plane and host, then the
// host's simLink, which can drop it, lose its answer, deliver it late, or
// find the agent dead or the host cut off; a plane can crash, after which
// every call it makes blocks until the test ends.

type simFault int

const (
	faultNone simFault = iota
	// Call faults strike one call.
	faultDrop        // unreachable: the call fails, nothing done
	faultLost        // applied, but the answer is lost (unreachable)
	faultDelay       // unreachable at once, lands simEnv.delay later (before its deadline: applied)
	faultDelayLate   // unreachable at once, lands just after its deadline (by the host's clock): refused
	faultCrashBefore // the plane dies as it sends the call (not applied)
	faultCrashAfter  // the host applies the call; the plane dies before the answer
	faultCutBefore   // the host is cut off from this call on (not applied), until healed
	faultCutAfter    // the host applies the call, then is cut off before it answers, until healed
	faultDieAfter    // the host applies the call, then its agent dies before it answers, until revived
	// Lasting faults start at a step's hook (or as a call reaches the host)
	// and last until healed: the kernel goes on meanwhile.
	faultPartition // the host cannot be reached (an expired certificate too)
	faultDead      // the agent is dead (its memory is lost) until revived
	faultDeadBrief // the agent is dead for simEnv.brief
	// faultCrashHook: the plane dies at the step's hook, before the step.
	faultCrashHook
	// faultStranger: from the step's hook until the heal, a station with
	// another MAC answers for the address on the hosts' segment.
	faultStranger
)

const simStrangerMAC = "02:e5:ba:d0:00:01"

var faultNames = map[simFault]string{faultNone: "none", faultDrop: "drop", faultLost: "lost", faultDelay: "delay", faultDelayLate: "delay-late",
	faultCrashBefore: "crash-before", faultCrashAfter: "crash-after", faultPartition: "partition", faultDead: "dead",
	faultDeadBrief: "dead-brief", faultCrashHook: "crash-hook", faultCutBefore: "cut-before", faultCutAfter: "cut-after",
	faultDieAfter: "die-after", faultStranger: "stranger"}

func (f simFault) String() string { return faultNames[f] }

// callFaults strike the n-th call a step makes to a host.
var callFaults = []simFault{faultDrop, faultLost, faultDelay, faultDelayLate, faultCrashBefore, faultCrashAfter, faultCutBefore, faultCutAfter, faultDieAfter}

// lastingFaults start at a step's hook, on one host.
var lastingFaults = []simFault{faultPartition, faultDead, faultDeadBrief}

// simPlane is one plane process; crash kills it.
type simPlane struct {
	name string
	dead chan struct{}
	once sync.Once
}

func newSimPlane(name string) *simPlane { return &simPlane{name: name, dead: make(chan struct{})} }

func (p *simPlane) crash() { p.once.Do(func() { close(p.dead) }) }

func (p *simPlane) crashed() bool {
	select {
	case <-p.dead:
		return true
	default:
		return false
	}
}

// simShot is a call fault waiting for its call.
type simShot struct {
	kind  simFault
	match func(ctx context.Context, method string) bool
	index int // strike the index-th matching call (from 0)

	seen   int
	fired  bool
	method string
}

// simLink is the network and agent between the planes and one host.
type simLink struct {
	env *simEnv
	h   *simHost

	mu          sync.Mutex
	partitioned bool
	dead        bool
	deadUntil   time.Time // zero: until revived
	shot        *simShot
}

func (l *simLink) deadNow() bool {
	return l.dead && (l.deadUntil.IsZero() || time.Now().Before(l.deadUntil))
}

// alive says the agent runs (another agent can reach it).
func (l *simLink) alive() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.deadNow()
}

// start begins a lasting fault. (Lock order: the world's lock is never
// taken under a link's, since the world asks links whether agents live.)
func (l *simLink) start(f simFault) {
	l.mu.Lock()
	switch f {
	case faultPartition:
		l.partitioned = true
	case faultDead, faultDeadBrief:
		l.dead, l.deadUntil = true, time.Time{}
		if f == faultDeadBrief {
			l.deadUntil = time.Now().Add(l.env.brief)
		}
	}
	l.mu.Unlock()
	if l.env.healAfter > 0 {
		time.AfterFunc(l.env.healAfter, l.heal)
	}
	w := l.env.w
	w.mu.Lock()
	defer w.mu.Unlock()
	w.logf("FAULT %s on %s", f, l.h.name)
	if f == faultDead || f == faultDeadBrief {
		l.h.agentRestarted()
	}
}

// heal ends the lasting faults: the partition heals, the agent is back.
func (l *simLink) heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partitioned, l.dead = false, false
}

func (l *simLink) arm(s *simShot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.shot = s
}

// admit decides the fate of one call: refused (the host cannot be
// reached), struck by the armed shot, or let through.
func (l *simLink) admit(ctx context.Context, method string) (*simShot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.deadNow() {
		return nil, fmt.Errorf("%s %s: agent dead: %w", l.h.name, method, ErrUnreachable)
	}
	if l.partitioned {
		return nil, fmt.Errorf("%s %s: partitioned: %w", l.h.name, method, ErrUnreachable)
	}
	s := l.shot
	if s == nil || s.fired || !s.match(ctx, method) {
		return nil, nil
	}
	s.seen++
	if s.seen <= s.index {
		return nil, nil
	}
	s.fired, s.method = true, method
	return s, nil
}

// simCrashAt crashes one plane as its index-th call (to any host) is
// applied.
type simCrashAt struct {
	mu    sync.Mutex
	plane *simPlane
	index int
	seen  int
}

func (c *simCrashAt) strike(p *simPlane) bool {
	if p != c.plane {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen++
	return c.seen == c.index+1
}

// simRecorder lists the calls each step makes to each host (a fault-free
// run's, from which the scenarios are drawn).
type simRecorder struct {
	mu    sync.Mutex
	steps map[<-chan struct{}]stepKey
	calls map[stepKey]map[string][]string
}

func (r *simRecorder) enter(ctx context.Context, k stepKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps[ctx.Done()] = k
}

func (r *simRecorder) call(ctx context.Context, host, method string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.steps[ctx.Done()]
	if !ok {
		return
	}
	if r.calls[k] == nil {
		r.calls[k] = map[string][]string{}
	}
	r.calls[k][host] = append(r.calls[k][host], method)
}

// simEnv is one scenario's world, links and planes.
type simEnv struct {
	w     *simWorld
	links map[string]*simLink
	// end is closed when the test is over: a crashed plane's calls return.
	end chan struct{}
	// delay is how late a delayed call lands; brief how long a brief
	// death lasts.
	delay, brief time.Duration
	// healAfter, if set, heals a lasting fault that long after it began
	// (else it lasts until the test heals it).
	healAfter time.Duration
	// delayed counts late calls in flight. Each lands during the run: the
	// agent refuses one that arrives after its deadline, as
	// plane/agentapi's server does, and the plane waits out the deadline
	// of every call it left unanswered before acting as if it never
	// happened.
	delayed sync.WaitGroup
	rec     *simRecorder
	// latency, if set, is how long a call takes to reach its host.
	latency func(host, method, args string) time.Duration
	crashAt atomic.Pointer[simCrashAt]
	callsMu sync.Mutex
	calls   map[*simPlane]int
}

// countCall counts a call that reached its host.
func (e *simEnv) countCall(p *simPlane) {
	e.callsMu.Lock()
	defer e.callsMu.Unlock()
	e.calls[p]++
}

func (e *simEnv) callsOf(p *simPlane) int {
	e.callsMu.Lock()
	defer e.callsMu.Unlock()
	return e.calls[p]
}

func newSimEnv(w *simWorld, delay, brief time.Duration) *simEnv {
	e := &simEnv{w: w, links: map[string]*simLink{}, end: make(chan struct{}), delay: delay, brief: brief,
		calls: map[*simPlane]int{}}
	for name, h := range w.hosts {
		e.links[name] = &simLink{env: e, h: h}
	}
	return e
}

func (e *simEnv) heal() {
	for _, l := range e.links {
		l.heal()
	}
	e.w.mu.Lock()
	defer e.w.mu.Unlock()
	if len(e.w.strangers) > 0 {
		e.w.logf("HEAL: the stranger leaves")
	}
	clear(e.w.strangers)
}

// stranger has a station with another MAC take the address.
func (e *simEnv) stranger() {
	e.w.mu.Lock()
	defer e.w.mu.Unlock()
	e.w.logf("FAULT a stranger answers for %v", e.w.spec.IP.Addr())
	e.w.strangers[e.w.spec.IP.Addr()] = simStrangerMAC
}

// hosts are the hosts as plane p reaches them.
func (e *simEnv) hosts(p *simPlane) HostMap {
	m := HostMap{}
	for name, l := range e.links {
		m[name] = &simConn{env: e, link: l, plane: p}
	}
	return m
}

func (e *simEnv) alive(name string) bool {
	l := e.links[name]
	return l != nil && l.alive()
}
