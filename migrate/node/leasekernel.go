package node

import (
	"errors"
	"net/netip"
	"time"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/migrate"
)

// The kernel lease of package arp, as the node's steps use it.

func installLease(ep arp.Endpoint, addr netip.Addr) error { return arp.InstallLease(ep, addr) }

func grantLease(ep arp.Endpoint, addr netip.Addr, ttl time.Duration) error {
	return arp.Grant(ep, addr, ttl)
}

// revokeLease revokes addr's lease; a namespace without a fence (one made
// before fences were) has none to revoke.
func revokeLease(ep arp.Endpoint, addr netip.Addr) error {
	if err := arp.Revoke(ep, addr); err != nil && !errors.Is(err, arp.ErrNoLease) {
		return err
	}
	return nil
}

func removeLease(ep arp.Endpoint) error { return arp.RemoveLease(ep) }

func leaseOf(ep arp.Endpoint, addr netip.Addr) (migrate.LeaseState, error) {
	li, err := arp.LeaseOf(ep, addr)
	if errors.Is(err, arp.ErrNoLease) {
		return migrate.LeaseState{}, nil
	}
	if err != nil {
		return migrate.LeaseState{}, err
	}
	return migrate.LeaseState{Held: li.Held, Pinned: li.Pinned, Remaining: li.Remaining}, nil
}
