package arp

// An address lease fences a container's service address from inside its
// network namespace, with nftables, so that the kernel, not the node agent,
// stops the address being served when the lease lapses.
//
// Why: the plane reaches a host's agent over the network, and "unreachable"
// is not "dead". A partitioned host, or one whose agent died while
// containerd and the container still run, may still serve the address, and
// bringing it up elsewhere then makes two copies answer for it. The plane
// grants the lease with a TTL during a handoff and renews it; if the
// renewals stop, for whatever reason, the kernel's timer runs out and the
// copy goes quiet with no process needed to make it so. Once the TTL has
// passed since the last renewal the plane sent, the old copy no longer
// serves the address, whether or not anyone there is alive. In steady state
// the lease is pinned (no timeout), so an outage of the plane never takes
// containers down.
//
// The rules, in table inet escape-lease (chains at priority filter-10) and
// table arp escape-lease:
//   - input: a packet from lo passes; an IPv4 packet to an address in set
//     "fenced" and not in set "held" is dropped.
//   - output: a packet to lo passes; an IPv4 packet from a fenced address
//     that is not held is dropped.
//   - arp output: an Ethernet/IPv4 ARP packet (reply or request) whose
//     sender protocol address is fenced and not held is dropped, so that
//     no neighbour learns the address from this copy.
//
// Everything else passes untouched. Sets belong to one table, so the arp
// table has its own fenced and held sets; every change writes both tables
// in one netlink batch, one nftables transaction, so they move together.
//
// A grant is an element of "held" with the TTL as its timeout (pinned: no
// timeout). Renewal deletes the element and adds it again with the new
// timeout in one batch: the transaction commits both at once, so a packet
// sees either the old grant or the new one, never a moment without.
// Committing the delete and the add in two batches instead drops the
// address's packets for as long as lies between them. Simply adding the
// element again is no renewal: for an element whose timeout stays the same
// the kernel (6.18) answers success and leaves the expiration as it was. It
// refreshes the expiration in place only when given
// NFTA_SET_ELEM_EXPIRATION, which google/nftables v0.3.0 does not write.
//
// Cost: a Grant that replaces an element takes some 14 ms of wall time
// here, nearly all of it asleep after the commit: when the netlink socket
// closes, the kernel first finishes freeing the replaced element, which
// waits out an RCU grace period. The new grant is in force before that
// wait. The renewals of a handoff, some every 100 ms, afford it.
//
// What the lease does not cover:
//   - AF_PACKET sends bypass the arp hook, so the gratuitous ARP of
//     Announce goes out even while the address is fenced. That is fine
//     because the agent announces only while it holds the lease.
//   - Forwarded traffic, IPv6, and addresses other than the fenced ones
//     are not touched; a container has only its service address.
//   - Time: a grant lapses TTL after this host's kernel took it. The plane
//     knows only when it sent a renewal, and one delayed in flight lands
//     later and lasts longer; so the plane may count the copy fenced only
//     TTL after its last renewal plus the longest a renewal may take to be
//     applied (a bound the agent enforces by refusing stale renewals),
//     with a margin for clock drift.
//   - The fencing token (the generation number of a grant) is kept by the
//     agent, not here.
//   - Calls for one namespace are not meant to race each other: the agent
//     serialises them.
//   - A process in the namespace with CAP_NET_ADMIN can remove the fence.

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNoLease means the namespace has no lease fence for the address:
// InstallLease was not called, or RemoveLease was.
var ErrNoLease = errors.New("no lease fence installed")

// LeaseInfo is the state of an address's lease.
type LeaseInfo struct {
	// Held is true while the address may be served.
	Held bool
	// Pinned is true for a grant without a timeout.
	Pinned bool
	// Remaining is the time left of a timed grant, as the kernel counts
	// it (millisecond resolution); zero when pinned or not held.
	Remaining time.Duration
}

// InstallLease puts the fence in place for addr in ep's namespace, with the
// address not held: until Grant, its traffic and ARP answers are dropped.
// Installing again changes nothing: in particular it leaves a running
// grant as it is, so an agent that restarts and installs again does not
// take its containers down. Several addresses may be fenced in one
// namespace.
func InstallLease(ep Endpoint, addr netip.Addr) error {
	what := fmt.Sprintf("install lease fence for %v in netns %s", addr, ep.Netns)
	if err := checkLeaseInput(ep, addr); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return withLeaseConn(ep, what, func(c *nftables.Conn) error {
		if err := queueFence(c, addr); err != nil {
			return err
		}
		return c.Flush()
	})
}

// Grant holds addr for ttl (0: pinned until Revoke), replacing any earlier
// grant atomically. The TTL counts from the moment the kernel takes the
// grant, in the kernel's ticks (4 ms at HZ=250).
func Grant(ep Endpoint, addr netip.Addr, ttl time.Duration) error {
	what := fmt.Sprintf("grant lease on %v in netns %s for %v", addr, ep.Netns, ttl)
	if err := checkLeaseInput(ep, addr); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if ttl < 0 || (ttl > 0 && ttl < time.Millisecond) {
		return fmt.Errorf("%s: ttl must be 0 (pinned) or at least 1ms", what)
	}
	return withLeaseConn(ep, what, func(c *nftables.Conn) error {
		if err := checkFenced(c, addr); err != nil {
			return err
		}
		return retryLapsed(func() error { return grantOnce(c, addr, ttl) })
	})
}

// Lapsed timed grants make a batch fail in two transient ways, and both
// are retried here:
//   - ENOENT: the element lapsed between looking and committing, so the
//     batch's delete finds nothing. Looking again settles it at once.
//   - EBUSY: seen once, under load, in TestLeaseGrantRacingItsLapse
//     (kernel 6.18). A lapsed element stays in the set's hash table,
//     unmatchable, until the set's garbage collector sweeps it (a delayed
//     work item, late under load). Entries of one key share one hash
//     chain, and the kernel's rhashtable refuses an insert with EBUSY when
//     that chain is past its limit while a rehash is pending; a rehash
//     cannot split entries of one key, so only the GC settles it. We could
//     not provoke it on an idle machine; waiting out the GC is safe either
//     way, because the batch either commits whole or not at all.
//
// lapseRetryFor bounds the wait at a little over two GC intervals.
const lapseRetryFor = 2500 * time.Millisecond

func retryLapsed(commit func() error) error {
	deadline := time.Now().Add(lapseRetryFor)
	backoff := 5 * time.Millisecond
	// After a lapse the element is gone for good, so two immediate
	// retries are plenty for ENOENT.
	for lapsedAgain := 0; ; {
		err := commit()
		switch {
		case errors.Is(err, unix.ENOENT) && lapsedAgain < 2:
			lapsedAgain++
		case errors.Is(err, unix.EBUSY) && time.Now().Add(backoff).Before(deadline):
			time.Sleep(backoff)
			backoff = min(2*backoff, 200*time.Millisecond)
		default:
			return err
		}
	}
}

// grantOnce writes, in one batch, the new grant into both held sets,
// deleting the element first where there is one. A pinned grant asked to
// stay pinned is left alone: replacing it would change nothing.
func grantOnce(c *nftables.Conn, addr netip.Addr, ttl time.Duration) error {
	for _, t := range leaseTables() {
		_, held := leaseSets(t)
		e, present, err := findElement(c, held, addr)
		if err != nil {
			return err
		}
		if present && ttl == 0 && e.Timeout == 0 {
			continue
		}
		if present {
			if err := c.SetDeleteElements(held, []nftables.SetElement{leaseElement(addr, 0)}); err != nil {
				return err
			}
		}
		if err := c.SetAddElements(held, []nftables.SetElement{leaseElement(addr, ttl)}); err != nil {
			return err
		}
	}
	return c.Flush()
}

// Revoke fences addr now. Revoking an address that is not held is not an
// error.
func Revoke(ep Endpoint, addr netip.Addr) error {
	what := fmt.Sprintf("revoke lease on %v in netns %s", addr, ep.Netns)
	if err := checkLeaseInput(ep, addr); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return withLeaseConn(ep, what, func(c *nftables.Conn) error {
		if err := checkFenced(c, addr); err != nil {
			return err
		}
		return retryLapsed(func() error { return revokeOnce(c, addr) })
	})
}

func revokeOnce(c *nftables.Conn, addr netip.Addr) error {
	for _, t := range leaseTables() {
		_, held := leaseSets(t)
		present, err := inSet(c, held, addr)
		if err != nil {
			return err
		}
		if present {
			if err := c.SetDeleteElements(held, []nftables.SetElement{leaseElement(addr, 0)}); err != nil {
				return err
			}
		}
	}
	return c.Flush()
}

// LeaseOf reports whether addr is held, and for how long still (pinned:
// remaining 0, pinned true). It reads the inet table's held set, which
// decides the address's traffic.
func LeaseOf(ep Endpoint, addr netip.Addr) (LeaseInfo, error) {
	what := fmt.Sprintf("read lease on %v in netns %s", addr, ep.Netns)
	if err := checkLeaseInput(ep, addr); err != nil {
		return LeaseInfo{}, fmt.Errorf("%s: %w", what, err)
	}
	var info LeaseInfo
	err := withLeaseConn(ep, what, func(c *nftables.Conn) error {
		if err := checkFenced(c, addr); err != nil {
			return err
		}
		_, held := leaseSets(leaseTables()[0])
		e, ok, err := findElement(c, held, addr)
		if err != nil || !ok {
			return err
		}
		info = LeaseInfo{Held: true, Pinned: e.Timeout == 0}
		if !info.Pinned {
			info.Remaining = e.Expires
		}
		return nil
	})
	return info, err
}

// RemoveLease deletes the fence (both tables, every address fenced there)
// from ep's namespace: its addresses then pass freely. Removing a fence
// that is not there is not an error.
func RemoveLease(ep Endpoint) error {
	what := fmt.Sprintf("remove lease fence in netns %s", ep.Netns)
	if err := checkLeaseNetns(ep); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return withLeaseConn(ep, what, func(c *nftables.Conn) error {
		tables, err := c.ListTables()
		if err != nil {
			return fmt.Errorf("list tables: %w", err)
		}
		for _, t := range tables {
			if t.Name == leaseTable && (t.Family == nftables.TableFamilyINet || t.Family == nftables.TableFamilyARP) {
				c.DelTable(t)
			}
		}
		return c.Flush()
	})
}

func checkLeaseNetns(ep Endpoint) error {
	if ep.Netns == "" {
		// The package's convention reads "" as the caller's namespace; here
		// that would fence the agent's own host, never what is meant.
		return errors.New("the container's network namespace must be named")
	}
	return validNetnsName(ep.Netns)
}

func checkLeaseInput(ep Endpoint, addr netip.Addr) error {
	if err := checkLeaseNetns(ep); err != nil {
		return err
	}
	switch {
	case !addr.IsValid():
		return errors.New("no address given")
	case !addr.Is4():
		return fmt.Errorf("address %v is not IPv4", addr)
	case addr.IsUnspecified(), addr.IsLoopback(), addr.IsMulticast(), addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("address %v cannot be a service address", addr)
	}
	return nil
}

// withLeaseConn runs fn with an nftables connection into ep's namespace,
// one netlink socket for all of fn's requests.
func withLeaseConn(ep Endpoint, what string, fn func(c *nftables.Conn) error) error {
	ns, err := netns.GetFromName(ep.Netns)
	if err != nil {
		return fmt.Errorf("%s: open netns: %w", what, err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("%s: nftables: %w", what, err)
	}
	defer c.CloseLasting()
	if err := fn(c); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// setElements lists a set, answering ErrNoLease when its table or the set
// is missing.
func setElements(c *nftables.Conn, s *nftables.Set) ([]nftables.SetElement, error) {
	elems, err := c.GetSetElements(s)
	if err != nil {
		// GetSetElements flattens the kernel's errno into text; asking for
		// the set itself keeps it, and tells a missing fence from a failure.
		if _, serr := c.GetSetByName(s.Table, s.Name); errors.Is(serr, unix.ENOENT) {
			return nil, ErrNoLease
		}
		return nil, fmt.Errorf("list set %s: %w", s.Name, err)
	}
	return elems, nil
}

// findElement looks addr up in s. The kernel lists no element that has
// expired, even before its garbage collection removes it.
func findElement(c *nftables.Conn, s *nftables.Set, addr netip.Addr) (nftables.SetElement, bool, error) {
	elems, err := setElements(c, s)
	if err != nil {
		return nftables.SetElement{}, false, err
	}
	k := addr.As4()
	for _, e := range elems {
		if string(e.Key) == string(k[:]) {
			return e, true, nil
		}
	}
	return nftables.SetElement{}, false, nil
}

func inSet(c *nftables.Conn, s *nftables.Set, addr netip.Addr) (bool, error) {
	_, ok, err := findElement(c, s, addr)
	return ok, err
}

// checkFenced answers ErrNoLease unless addr is fenced: a grant for an
// address without the fence would look like a lease and fence nothing
// when it lapsed.
func checkFenced(c *nftables.Conn, addr netip.Addr) error {
	fenced, _ := leaseSets(leaseTables()[0])
	ok, err := inSet(c, fenced, addr)
	if err != nil {
		return err
	}
	if !ok {
		return ErrNoLease
	}
	return nil
}
