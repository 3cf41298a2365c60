package migrate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// A world in memory for the model-based fault tests (sim_test.go): hosts
// whose kernels keep containers, namespaces, address leases and checkpoint
// images, and whose agents answer the Host calls with the semantics
// host.go documents. The container's state is a counter that a client
// increments on whichever copy serves the address; the world checks the
// migration's safety rules after every change it applies, so that no
// instant between two samples goes unchecked.

// simImage is a checkpoint image: a dump of the counter.
type simImage struct {
	counter int64
	bytes   int64
}

// simStore is one image store: a host's own, or storage hosts share.
type simStore struct {
	name   string
	images map[ImageName]simImage
}

// simLease is the address lease in a namespace, as its kernel holds it.
// lapse is on the host's clock.
type simLease struct {
	held, pinned bool
	gen          uint64
	lapse        time.Time
}

// simNet is a container's namespace and interface.
type simNet struct {
	mac    string
	addrs  []netip.Prefix
	guards Guards
	lease  simLease
}

// simCtr is a container object and its task.
type simCtr struct {
	status Status
	// staged names the image a created-not-started restore task reads.
	staged ImageName
	// counter is the running copy's state (meaningless unless Running).
	counter int64
}

type simOffer struct {
	kind  OfferKind
	name  string
	to    string
	until time.Time
}

// simHost is one machine: its kernel (containers, namespaces, leases,
// images: they go on whether or not the agent lives) and its agent's
// memory (offers, sentries: lost when the agent dies).
type simHost struct {
	w      *simWorld
	name   string
	store  *simStore
	images map[string]bool // container images in its content store
	cts    map[string]*simCtr
	nets   map[string]*simNet
	// seen is the newest lease generation the host has seen per container.
	seen map[string]uint64
	// clock is how far the host's clock is ahead of the plane's.
	clock time.Duration

	offers   map[Ticket]simOffer
	sentries map[SentryID]bool
	seq      int
	boot     int
}

// simBreak are deliberate bugs, for checking that the monitor catches what
// they break.
type simBreak struct {
	ignoreExpiry     bool          // armed leases never lapse
	ignoreNotAfter   bool          // a grant's deadline counts for nothing: late grants are applied, for their whole TTL
	ignoreGeneration bool          // grants older than seen are applied
	pinLapses        time.Duration // a pin lapses this long after it lands
	dumpForgets      bool          // a dump holds a counter one lower than the copy's
}

// simWorld holds every host and the client's account of the container.
type simWorld struct {
	mu    sync.Mutex
	start time.Time
	hosts map[string]*simHost
	spec  Spec
	// stateful: the container's state must survive (a migration); a
	// stateless replica's (a handoff) need not.
	stateful bool
	broken   simBreak
	// registry holds the container images hosts can pull.
	registry map[string]bool
	// strangers answer for addresses from other MACs.
	strangers map[netip.Addr]string

	maxAcked int64
	acks     int
	// violations are the rules broken, first occurrence of each kind.
	violations []simViolation
	trace      []string
}

type simViolation struct {
	at   time.Duration
	kind string
	msg  string
	// cause is the call whose change broke the rule ("" when the client
	// or a lapse found it).
	cause string
}

func newSimWorld(spec Spec, stateful bool) *simWorld {
	return &simWorld{start: time.Now(), hosts: map[string]*simHost{}, spec: spec, stateful: stateful,
		registry: map[string]bool{}, strangers: map[netip.Addr]string{}}
}

// addHost adds a host with its own image store, or sharing store.
func (w *simWorld) addHost(name string, store *simStore) *simHost {
	if store == nil {
		store = &simStore{images: map[ImageName]simImage{}}
	}
	h := &simHost{w: w, name: name, store: store, images: map[string]bool{}, cts: map[string]*simCtr{},
		nets: map[string]*simNet{}, seen: map[string]uint64{}, offers: map[Ticket]simOffer{}, sentries: map[SentryID]bool{}}
	w.hosts[name] = h
	return h
}

func (w *simWorld) since() time.Duration { return time.Since(w.start).Round(time.Microsecond) }

func (w *simWorld) logf(format string, args ...any) {
	w.trace = append(w.trace, fmt.Sprintf("%9v ", w.since())+fmt.Sprintf(format, args...))
}

// Trace returns the world's log.
func (w *simWorld) Trace() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.trace, "\n")
}

func (w *simWorld) violate(kind, cause, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	w.logf("VIOLATION %s: %s", kind, msg)
	for _, v := range w.violations {
		if v.kind == kind {
			return
		}
	}
	w.violations = append(w.violations, simViolation{at: w.since(), kind: kind, msg: msg, cause: cause})
}

// Violations returns the rules broken so far.
func (w *simWorld) Violations() []simViolation {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.violations)
}

func (h *simHost) now() time.Time { return time.Now().Add(h.clock) }

func (l simLease) heldAt(now time.Time, b simBreak) bool {
	return l.held && (l.pinned || b.ignoreExpiry || now.Before(l.lapse))
}

func (n *simNet) has(ip netip.Prefix) bool { return slices.Contains(n.addrs, ip) }

// answering says the namespace answers for the address: it has it and its
// lease holds (a lapsed lease fences traffic and ARP).
func (h *simHost) answering(id string) bool {
	n := h.nets[id]
	return n != nil && n.has(h.w.spec.IP) && n.lease.heldAt(h.now(), h.w.broken)
}

// serving: the copy runs, its namespace has the address under a lease
// that holds, and no hold guard drops its clients' packets.
func (h *simHost) serving(id string) bool {
	c := h.cts[id]
	return c != nil && c.status == Running && h.answering(id) && h.nets[id].guards&GuardHold == 0
}

// servingHosts lists the hosts whose copy serves (w.mu held).
func (w *simWorld) servingHosts() []*simHost {
	var out []*simHost
	for _, name := range w.hostNames() {
		if h := w.hosts[name]; h.serving(w.spec.ID) {
			out = append(out, h)
		}
	}
	return out
}

func (w *simWorld) hostNames() []string {
	names := make([]string, 0, len(w.hosts))
	for n := range w.hosts {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// check verifies the rules that hold at every instant (w.mu held): at most
// one copy serves, at most one namespace answers for the address, and the
// container's newest acknowledged state exists as a running copy or a
// complete dump.
func (w *simWorld) check(cause string) {
	id := w.spec.ID
	var serving, answering []string
	for _, name := range w.hostNames() {
		h := w.hosts[name]
		if h.serving(id) {
			serving = append(serving, name)
		}
		if h.answering(id) {
			answering = append(answering, name)
		}
	}
	if len(serving) > 1 {
		w.violate("two-serving", cause, "copies serve on %v at once", serving)
	}
	if len(answering) > 1 {
		w.violate("two-answering", cause, "namespaces on %v answer for %v at once", answering, w.spec.IP)
	}
	if !w.stateful {
		return
	}
	if where := w.stateAt(); where == "" {
		w.violate("state-lost", cause, "no running copy and no complete dump holds acknowledged value %d", w.maxAcked)
	}
}

// stateAt says where the newest acknowledged state is ("" nowhere).
func (w *simWorld) stateAt() string {
	id := w.spec.ID
	for _, name := range w.hostNames() {
		h := w.hosts[name]
		if c := h.cts[id]; c != nil && (c.status == Running || c.status == Paused) && c.counter >= w.maxAcked {
			return "copy on " + name
		}
	}
	for _, name := range w.hostNames() {
		for n, img := range w.hosts[name].store.images {
			if img.counter >= w.maxAcked {
				return fmt.Sprintf("dump %s on %s", n, name)
			}
		}
	}
	return ""
}

// clientTick is one request of the client: served by whichever copy
// serves now, acknowledged with the counter's new value. A copy that
// serves an older state than one acknowledged has lost writes.
func (w *simWorld) clientTick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.check("")
	s := w.servingHosts()
	if len(s) != 1 {
		return
	}
	c := s[0].cts[w.spec.ID]
	if w.stateful && c.counter < w.maxAcked {
		w.violate("lost-write", "", "copy on %s serves counter %d, but %d was acknowledged", s[0].name, c.counter, w.maxAcked)
	}
	c.counter++
	w.acks++
	w.maxAcked = max(w.maxAcked, c.counter)
}

// Acks returns how many requests were acknowledged.
func (w *simWorld) Acks() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acks
}

// apply runs one host call under the world's lock and checks the rules
// right after it.
func apply[T any](h *simHost, what string, op func() (T, error)) (T, error) {
	w := h.w
	w.mu.Lock()
	defer w.mu.Unlock()
	v, err := op()
	if err != nil {
		w.logf("%s %s -> error: %v", h.name, what, err)
	} else {
		w.logf("%s %s -> %+v", h.name, what, v)
	}
	w.check(h.name + " " + what)
	return v, err
}

// placeRunning places a running copy of the container on h, its address
// pinned at generation gen, with counter as its state.
func (w *simWorld) placeRunning(h *simHost, gen uint64, withAddress bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.spec
	h.images[s.Image] = true
	n := h.ensureNet(s)
	if withAddress {
		n.addrs = append(n.addrs, s.IP)
		n.lease = simLease{held: true, pinned: true, gen: gen}
		h.seen[s.ID] = gen
	}
	h.cts[s.ID] = &simCtr{status: Running}
}
