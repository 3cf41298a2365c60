package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// The network steps: the container's namespace, its address under its
// lease, its announcements, and probes of the segment from the host's own
// interface.

// Bounds on what a caller may ask for: each is far above what a migration
// needs, and keeps a bad request from holding the agent.
const (
	maxProbe         = 10 * time.Second
	maxAnnounceRound = 10
)

// PrepareNetwork creates the container's namespace and interface (its MAC
// on the host's bridge), with the lease's fence in place before any
// address. withAddress adds the spec's address too, which needs a lease
// already granted in an existing namespace (Lease): a fresh namespace has
// none, so the address comes with ClaimAddress, or with Start's lease.
func (n *Node) PrepareNetwork(ctx context.Context, s migrate.Spec, withAddress bool) (migrate.StepResult, error) {
	if err := s.Validate(); err != nil {
		return migrate.StepResult{}, n.fail("prepare network", s.ID, err)
	}
	defer n.lockContainer(s.ID)()
	if err := n.placeNetwork(ctx, s.ID, &s); err != nil {
		return migrate.StepResult{}, n.fail("prepare network", s.ID, err)
	}
	ready := n.networkReady(s)
	if withAddress {
		st, err := n.leaseState(s.ID)
		if err == nil && (!ready || !st.Held) {
			err = errors.New("the address needs a granted lease: prepare the network without it, then Lease and ClaimAddress (or Start with a lease)")
		}
		if err != nil {
			return migrate.StepResult{}, n.fail("prepare network", s.ID, err)
		}
	}
	did := "exists"
	if !ready {
		if err := n.setupNetwork(s); err != nil {
			return migrate.StepResult{}, n.fail("prepare network", s.ID, err)
		}
		did = "created"
	}
	if withAddress {
		has, err := arp.HasAddress(n.ctEndpoint(s.ID), s.IP)
		if err == nil && !has {
			err = arp.AddAddress(n.ctEndpoint(s.ID), s.IP)
			did = "address added"
		}
		if err != nil {
			return migrate.StepResult{}, n.fail("prepare network", s.ID, err)
		}
	}
	return migrate.StepResult{Did: did}, nil
}

// prepareNetwork is the network of Start: made if it is not there and,
// with withAddr, the lease granted and then the address added.
func (n *Node) prepareNetwork(s migrate.Spec, withAddr bool, l migrate.Lease) (created bool, err error) {
	if !n.networkReady(s) {
		if err := n.setupNetwork(s); err != nil {
			return false, err
		}
		created = true
	}
	if !withAddr {
		return created, nil
	}
	if _, err := n.lease(s.ID, l); err != nil {
		return created, err
	}
	return created, arp.AddAddress(n.ctEndpoint(s.ID), s.IP)
}

// RemoveNetwork deletes the container's namespace, with its lease, and its
// interface. The lease's generation is kept.
func (n *Node) RemoveNetwork(ctx context.Context, id string) (migrate.StepResult, error) {
	if err := migrate.ValidID(id); err != nil {
		return migrate.StepResult{}, n.fail("remove network", id, err)
	}
	defer n.lockContainer(id)()
	if _, err := n.locate(ctx, id); err != nil {
		return migrate.StepResult{}, n.fail("remove network", id, err)
	}
	had, err := n.removeNetwork(ctx, id)
	if err != nil {
		return migrate.StepResult{}, n.fail("remove network", id, err)
	}
	return didIf(had, "removed", "absent"), nil
}

func (n *Node) removeNetwork(ctx context.Context, id string) (bool, error) {
	n.announcing.stop(id)
	p := n.placeOf(id)
	if !p.hasNetwork() {
		return false, nil
	}
	if !p.adopted && n.userHolds(ctx, id) {
		// A namespace the node made for an adopted container's copy that
		// its user unlabelled since: it is the user's container's now.
		n.log.Warn("network left in place: a user's container of the same id uses it", zapID(id))
		return false, nil
	}
	if arp.NetnsExists(n.ctNetns(id)) {
		// The addresses go before their fence: a copy whose address was
		// never released (its agent was down when the plane moved the
		// address on, and its lease lapsed) would otherwise answer for it,
		// unfenced, until its interface is gone, while the address's new
		// owner serves it.
		if err := n.dropAddresses(id); err != nil {
			n.log.Warn("remove the addresses with the namespace; the fence stays until it goes", zapID(id), zap.Error(err))
		} else if err := removeLease(n.ctEndpoint(id)); err != nil {
			n.log.Warn("remove lease with the namespace", zapID(id), zap.Error(err))
		}
	}
	return n.teardownNetwork(id)
}

// dropAddresses removes every IPv4 address from the container's interface.
func (n *Node) dropAddresses(id string) error {
	addrs, err := n.addresses(id)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range addrs {
		errs = append(errs, arp.DelAddress(n.ctEndpoint(id), a))
	}
	return errors.Join(errs...)
}

func validAddress(ip netip.Prefix) error {
	if !ip.IsValid() || !ip.Addr().Is4() || ip.Bits() == 32 {
		return fmt.Errorf("ip %v: want an IPv4 address with its subnet prefix", ip)
	}
	return nil
}

// ReleaseAddress removes ip from the container's interface, then revokes
// its lease (the fence stays, the generation too).
func (n *Node) ReleaseAddress(ctx context.Context, id string, ip netip.Prefix) (migrate.StepResult, error) {
	if err := errors.Join(migrate.ValidID(id), validAddress(ip)); err != nil {
		return migrate.StepResult{}, n.fail("release address", id, err)
	}
	defer n.lockContainer(id)()
	// No round of an earlier announcement may follow the address away.
	n.announcing.stop(id)
	if err := n.placeNetwork(ctx, id, nil); err != nil {
		return migrate.StepResult{}, n.fail("release address", id, err)
	}
	if !arp.NetnsExists(n.ctNetns(id)) {
		return migrate.StepResult{Did: "absent"}, nil
	}
	ep := n.ctEndpoint(id)
	has, err := arp.HasAddress(ep, ip)
	if err == nil && has {
		err = arp.DelAddress(ep, ip)
	}
	if err != nil {
		return migrate.StepResult{}, n.fail("release address", id, err)
	}
	st, err := leaseOf(ep, ip.Addr())
	if err == nil {
		err = revokeLease(ep, ip.Addr())
	}
	if err != nil {
		return migrate.StepResult{}, n.fail("release address", id, fmt.Errorf("revoke lease: %w", err))
	}
	return didIf(has || st.Held, "released", "absent"), nil
}

// ClaimAddress grants the lease, takes a last look for another owner of
// the address on the segment (from the container's interface, for
// opts.LastLook), and adds the address. Another owner revokes the lease and
// fails with arp.ErrAddressTaken. On any error the address is not there.
func (n *Node) ClaimAddress(ctx context.Context, id string, ip netip.Prefix, opts migrate.ClaimOptions) (migrate.StepResult, error) {
	err := errors.Join(migrate.ValidID(id), validAddress(ip), validLease(opts.Lease))
	if err == nil && opts.Lease.IP != ip.Addr() {
		err = fmt.Errorf("lease for %v, address %v: want the same", opts.Lease.IP, ip.Addr())
	}
	if err == nil && opts.Lease.Revoke {
		err = errors.New("a claim grants its lease: Revoke set")
	}
	if err == nil && (opts.LastLook < 0 || opts.LastLook > maxProbe) {
		err = fmt.Errorf("last look %v: want 0 to %v", opts.LastLook, maxProbe)
	}
	if err != nil {
		return migrate.StepResult{}, n.fail("claim address", id, err)
	}
	defer n.lockContainer(id)()
	if err := n.placeNetwork(ctx, id, nil); err != nil {
		return migrate.StepResult{}, n.fail("claim address", id, err)
	}
	ep := n.ctEndpoint(id)
	if !arp.NetnsExists(ep.Netns) {
		return migrate.StepResult{}, n.fail("claim address", id, errors.New("no network namespace (PrepareNetwork first)"))
	}
	has, err := arp.HasAddress(ep, ip)
	if err != nil {
		return migrate.StepResult{}, n.fail("claim address", id, err)
	}
	if has {
		// Claimed already: the lease is renewed (or refused as stale, and
		// then the address must not stay).
		if _, err := n.lease(id, opts.Lease); err != nil {
			_ = arp.DelAddress(ep, ip)
			return migrate.StepResult{}, n.fail("claim address", id, err)
		}
		return migrate.StepResult{Did: "already claimed"}, nil
	}
	if _, err := n.lease(id, opts.Lease); err != nil {
		return migrate.StepResult{}, n.fail("claim address", id, err)
	}
	undo := func(cause error) error {
		if err := revokeLease(ep, ip.Addr()); err != nil {
			cause = errors.Join(cause, fmt.Errorf("revoke lease: %w", err))
		}
		return n.fail("claim address", id, cause)
	}
	if opts.LastLook > 0 {
		mac, taken, err := arp.Probe(ctx, ep, ip.Addr(), opts.LastLook)
		if err != nil {
			return migrate.StepResult{}, undo(err)
		}
		if taken {
			return migrate.StepResult{}, undo(fmt.Errorf("%w: %w: %v answers from %v", migrate.ErrAddressTaken, arp.ErrAddressTaken, ip.Addr(), mac))
		}
	}
	if err := ctx.Err(); err != nil {
		return migrate.StepResult{}, undo(err)
	}
	if err := arp.AddAddress(ep, ip); err != nil {
		_ = arp.DelAddress(ep, ip)
		return migrate.StepResult{}, undo(err)
	}
	return migrate.StepResult{Did: "claimed"}, nil
}

// Announce sends gratuitous ARP for ip from the container's interface: the
// first round before it returns, the others in the background, on their
// own deadline (they outlive the call; Close stops them).
func (n *Node) Announce(ctx context.Context, id string, ip netip.Addr, opts migrate.AnnounceOptions) (migrate.StepResult, error) {
	if opts.Rounds == 0 {
		opts.Rounds = 3
	}
	if opts.Interval == 0 {
		opts.Interval = 1100 * time.Millisecond
	}
	err := migrate.ValidID(id)
	if err == nil && !ip.Is4() {
		err = fmt.Errorf("ip %v: want an IPv4 address", ip)
	}
	if err == nil && (opts.Rounds < 1 || opts.Rounds > maxAnnounceRound || opts.Interval > 10*time.Second) {
		err = fmt.Errorf("announce %d rounds %v apart: want 1 to %d rounds at most 10s apart", opts.Rounds, opts.Interval, maxAnnounceRound)
	}
	if err != nil {
		return migrate.StepResult{}, n.fail("announce", id, err)
	}
	// Under the container's lock, so that a release cannot slip between
	// the check of the address and the start of the rounds.
	defer n.lockContainer(id)()
	if err := n.placeNetwork(ctx, id, nil); err != nil {
		return migrate.StepResult{}, n.fail("announce", id, err)
	}
	ep := n.ctEndpoint(id)
	if has, err := n.hasAddr(ep, ip); err != nil {
		return migrate.StepResult{}, n.fail("announce", id, err)
	} else if !has {
		// Released (or never claimed) here: announcing it would point the
		// segment at a copy that does not serve it.
		return migrate.StepResult{Did: "absent"}, nil
	}
	actx, cancel := context.WithTimeout(n.bgCtx, time.Duration(opts.Rounds+1)*opts.Interval)
	a, err := arp.Announce(actx, ep, ip, arp.WithRepeats(opts.Rounds), arp.WithInterval(opts.Interval), arp.WithLogger(n.log))
	if err != nil {
		cancel()
		return migrate.StepResult{}, n.fail("announce", id, err)
	}
	tok := n.announcing.start(id, cancel)
	go func() { _ = a.Wait(); n.announcing.done(id, tok) }()
	return migrate.StepResult{Did: "announced"}, nil
}

// hasAddr says whether ip, whatever its prefix, is on ep's interface.
func (n *Node) hasAddr(ep arp.Endpoint, ip netip.Addr) (bool, error) {
	h, err := arp.Handle(ep.Netns)
	if err != nil {
		return false, err
	}
	defer h.Close()
	l, err := h.LinkByName(ep.Link)
	if err != nil {
		return false, err
	}
	addrs, err := h.AddrList(l, unix.AF_INET)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP.To4()); ok && got == ip {
			return true, nil
		}
	}
	return false, nil
}

// announcements are the background announcement rounds of each container.
// A container that gives its address up (ReleaseAddress, or its removal)
// stops its rounds at once: a round sent after the address moved would
// point the segment (the switches' tables, the neighbours' caches) back at
// a host that no longer serves it, since both copies share the MAC.
type announcements struct {
	mu sync.Mutex
	m  map[string]*announcing
}

type announcing struct{ cancel context.CancelFunc }

// start records id's new rounds, stopping any it had.
func (a *announcements) start(id string, cancel context.CancelFunc) *announcing {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string]*announcing{}
	}
	if old := a.m[id]; old != nil {
		old.cancel()
	}
	tok := &announcing{cancel: cancel}
	a.m[id] = tok
	return tok
}

// done forgets rounds that ended by themselves.
func (a *announcements) done(id string, tok *announcing) {
	tok.cancel()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m[id] == tok {
		delete(a.m, id)
	}
}

// stop ends id's rounds, if any.
func (a *announcements) stop(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if tok := a.m[id]; tok != nil {
		tok.cancel()
		delete(a.m, id)
	}
}

func parseIgnore(mac string) (net.HardwareAddr, error) {
	if mac == "" {
		return nil, nil
	}
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return nil, fmt.Errorf("mac %q: want an Ethernet address", mac)
	}
	return hw, nil
}

// Probe asks, from the host's own interface, whether a station other than
// ignoreMAC answers for ip within d.
func (n *Node) Probe(ctx context.Context, ip netip.Addr, ignoreMAC string, d time.Duration) (migrate.ProbeResult, error) {
	hw, err := parseIgnore(ignoreMAC)
	if err == nil && !ip.Is4() {
		err = fmt.Errorf("ip %v: want an IPv4 address", ip)
	}
	if err == nil && (d <= 0 || d > maxProbe) {
		err = fmt.Errorf("probe for %v: want more than 0 and at most %v", d, maxProbe)
	}
	if err != nil {
		return migrate.ProbeResult{}, n.fail("probe", "", err)
	}
	var o []arp.Option
	if hw != nil {
		o = append(o, arp.WithIgnore(hw))
	}
	mac, taken, err := arp.Probe(ctx, n.hostEndpoint(), ip, d, o...)
	if err != nil {
		return migrate.ProbeResult{}, n.fail("probe", "", err)
	}
	return probeResult(mac, taken), nil
}

func probeResult(mac net.HardwareAddr, taken bool) migrate.ProbeResult {
	if !taken {
		return migrate.ProbeResult{}
	}
	return migrate.ProbeResult{Taken: true, By: mac.String()}
}

// SetGuards adds (on) the guards of g that are missing in the container's
// namespace, or removes (off) those present.
func (n *Node) SetGuards(ctx context.Context, id string, g migrate.Guards, on bool) (migrate.StepResult, error) {
	err := migrate.ValidID(id)
	if err == nil && (g == 0 || g&^(migrate.GuardResets|migrate.GuardHold) != 0) {
		err = fmt.Errorf("guards %#x: want GuardResets, GuardHold or both", uint8(g))
	}
	if err != nil {
		return migrate.StepResult{}, n.fail("set guards", id, err)
	}
	defer n.lockContainer(id)()
	if err := n.placeNetwork(ctx, id, nil); err != nil {
		return migrate.StepResult{}, n.fail("set guards", id, err)
	}
	ns := n.ctNetns(id)
	if !arp.NetnsExists(ns) {
		if on {
			return migrate.StepResult{}, n.fail("set guards", id, errors.New("no network namespace (PrepareNetwork first)"))
		}
		return migrate.StepResult{Did: "absent"}, nil
	}
	changed, err := ensureGuards(ctx, ns, guard(g), on)
	if err != nil {
		return migrate.StepResult{}, n.fail("set guards", id, err)
	}
	if on {
		return didIf(changed, "added", "present"), nil
	}
	return didIf(changed, "removed", "absent"), nil
}

// NetworkLocks lists, and with remove deletes, the CRIU network lock
// tables in the container's namespace (netlock.go).
func (n *Node) NetworkLocks(ctx context.Context, id string, remove bool) ([]string, error) {
	if err := migrate.ValidID(id); err != nil {
		return nil, n.fail("network locks", id, err)
	}
	defer n.lockContainer(id)()
	if err := n.placeNetwork(ctx, id, nil); err != nil {
		return nil, n.fail("network locks", id, err)
	}
	names, err := networkLocks(n.ctNetns(id), remove)
	if err != nil {
		return nil, n.fail("network locks", id, err)
	}
	return names, nil
}

func didIf(cond bool, yes, no string) migrate.StepResult {
	if cond {
		return migrate.StepResult{Did: yes}
	}
	return migrate.StepResult{Did: no}
}

func zapID(id string) zap.Field { return zap.String("container", id) }
