package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/escape-mtd/escape/migrate"
)

// Leases. A container's address is held under a kernel-enforced lease in
// its namespace (package arp): the fence drops the address's traffic and
// its ARP answers the moment the lease lapses, whether or not this agent
// is still alive. The plane numbers each placement of a container with a
// generation; the node records the highest it has seen, before acting, so
// that an older plane's (or a delayed) grant cannot bring back an address
// that a newer placement has moved elsewhere.

// leaseRecord is what the node keeps of a container's lease.
type leaseRecord struct {
	Generation uint64     `json:"generation"`
	IP         netip.Addr `json:"ip"`
}

func (n *Node) leaseFile(id string) string { return filepath.Join(n.leaseDir(), id+".json") }

// leaseRecordOf reads container id's lease record (zero if none).
func (n *Node) leaseRecordOf(id string) (leaseRecord, error) {
	var r leaseRecord
	b, err := os.ReadFile(n.leaseFile(id))
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("lease record %s: %w", n.leaseFile(id), err)
	}
	return r, nil
}

func validLease(l migrate.Lease) error {
	if !l.IP.IsValid() || !l.IP.Is4() {
		return fmt.Errorf("lease ip %v: want an IPv4 address", l.IP)
	}
	if l.Generation == 0 {
		return errors.New("lease generation 0: generations start at 1")
	}
	if l.TTL < 0 {
		return fmt.Errorf("lease ttl %v: want 0 (pinned) or more", l.TTL)
	}
	return nil
}

// bounded applies a grant's wall-clock deadline: a grant that arrives
// after its NotAfter is refused (a request a healed partition delivered
// late must not extend a lease beyond what the plane counted on), and an
// armed one lasts until NotAfter at the latest. A revocation always
// applies.
func (n *Node) bounded(l migrate.Lease) (migrate.Lease, error) {
	if l.Revoke || l.NotAfter.IsZero() {
		return l, nil
	}
	left := l.NotAfter.Sub(n.now())
	if left <= 0 {
		return l, fmt.Errorf("%w: it was due by %s, %v ago", migrate.ErrLeaseExpired, l.NotAfter.UTC().Format(time.RFC3339Nano), -left)
	}
	if l.TTL > 0 && left < l.TTL {
		// The kernel's timer has millisecond resolution; round down so
		// the lease never outlives its deadline.
		l.TTL = left.Truncate(time.Millisecond)
		if l.TTL <= 0 {
			return l, fmt.Errorf("%w: less than a millisecond left", migrate.ErrLeaseExpired)
		}
	}
	return l, nil
}

// Lease sets container id's address lease: granted for l.TTL (0 pins it)
// or, with l.Revoke, revoked; the generation is kept either way. A
// generation lower than one the node has seen is refused
// (migrate.ErrStaleGeneration). The container's namespace must exist.
func (n *Node) Lease(ctx context.Context, id string, l migrate.Lease) (migrate.LeaseState, error) {
	if err := migrate.ValidID(id); err != nil {
		return migrate.LeaseState{}, n.fail("lease", id, err)
	}
	if err := validLease(l); err != nil {
		return migrate.LeaseState{}, n.fail("lease", id, err)
	}
	defer n.lockContainer(id)()
	if err := n.placeNetwork(ctx, id, nil); err != nil {
		return migrate.LeaseState{}, n.fail("lease", id, err)
	}
	st, err := n.lease(id, l)
	if err != nil {
		return st, n.fail("lease", id, err)
	}
	return st, nil
}

// lease is Lease with the container's lock held.
func (n *Node) lease(id string, l migrate.Lease) (migrate.LeaseState, error) {
	l, err := n.bounded(l)
	if err != nil {
		return migrate.LeaseState{}, err
	}
	if !arp.NetnsExists(n.ctNetns(id)) {
		return migrate.LeaseState{}, errors.New("no network namespace (PrepareNetwork first)")
	}
	rec, err := n.leaseRecordOf(id)
	if err != nil {
		return migrate.LeaseState{}, err
	}
	if l.Generation < rec.Generation {
		return migrate.LeaseState{}, fmt.Errorf("generation %d, the host has seen %d: %w", l.Generation, rec.Generation, migrate.ErrStaleGeneration)
	}
	if l.Generation != rec.Generation || l.IP != rec.IP {
		// Recorded before the kernel is touched: a crash in between
		// leaves the higher generation, never a grant without it.
		b, _ := json.Marshal(leaseRecord{Generation: l.Generation, IP: l.IP})
		if err := atomicfile.WriteFile(n.leaseFile(id), b, 0o600); err != nil {
			return migrate.LeaseState{}, err
		}
	}
	ep := n.ctEndpoint(id)
	if p := n.placeOf(id); p.adopted && !p.own && !l.Revoke {
		// A user's namespace has no fence until the first lease of its
		// address (a migration's): it goes in now, and the grant right
		// after it (the address's packets are dropped in between, for the
		// few milliseconds of two nftables commits).
		if _, err := arp.LeaseOf(ep, l.IP); errors.Is(err, arp.ErrNoLease) {
			if err := installLease(ep, l.IP); err != nil {
				return migrate.LeaseState{}, fmt.Errorf("fence the adopted container's address: %w", err)
			}
		}
	}
	if l.Revoke {
		err = revokeLease(ep, l.IP)
	} else {
		err = grantLease(ep, l.IP, l.TTL)
	}
	if err != nil {
		return migrate.LeaseState{}, err
	}
	st, err := leaseOf(ep, l.IP)
	st.Generation = l.Generation
	return st, err
}

// leaseState is the lease as the kernel holds it in id's namespace, with
// the generation the node recorded.
func (n *Node) leaseState(id string) (migrate.LeaseState, error) {
	return n.leaseStateOn(id, n.ctEndpoint(id))
}

// leaseStateOn is leaseState with the container's interface ep.
func (n *Node) leaseStateOn(id string, ep arp.Endpoint) (migrate.LeaseState, error) {
	rec, err := n.leaseRecordOf(id)
	if err != nil || !rec.IP.IsValid() || !arp.NetnsExists(ep.Netns) {
		return migrate.LeaseState{Generation: rec.Generation}, err
	}
	st, err := leaseOf(ep, rec.IP)
	st.Generation = rec.Generation
	return st, err
}
