package agentapi

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi/agentpb"
)

// Conversions between migrate's types and the wire's. Decoding validates:
// a field the wire cannot carry faithfully is an error, never a zero value
// passed on.

func specToPB(s migrate.Spec) *agentpb.Spec {
	ip := ""
	if s.IP.IsValid() {
		ip = s.IP.String()
	}
	return &agentpb.Spec{Id: s.ID, Image: s.Image, Args: s.Args, Env: s.Env, Ip: ip, Mac: s.MAC,
		MemoryLimit: s.MemoryLimit, NetworkLock: s.NetworkLock, Labels: s.Labels, Adopted: adoptedToPB(s.Adopted)}
}

func adoptedToPB(a *migrate.Adopted) *agentpb.Adopted {
	if a == nil {
		return nil
	}
	return &agentpb.Adopted{Namespace: a.Namespace, OciSpec: a.OCISpec, Snapshotter: a.Snapshotter, Runtime: a.Runtime,
		Netns: a.Netns, Link: a.Link, Status: string(a.Status), Movable: a.Movable, Rollback: a.Rollback, Refusals: a.Refusals}
}

func adoptedFromPB(p *agentpb.Adopted) *migrate.Adopted {
	if p == nil {
		return nil
	}
	var spec []byte
	if len(p.GetOciSpec()) > 0 {
		spec = p.GetOciSpec()
	}
	return &migrate.Adopted{Namespace: p.GetNamespace(), OCISpec: spec, Snapshotter: p.GetSnapshotter(), Runtime: p.GetRuntime(),
		Netns: p.GetNetns(), Link: p.GetLink(), Status: migrate.Status(p.GetStatus()), Movable: p.GetMovable(), Rollback: p.GetRollback(),
		Refusals: p.GetRefusals()}
}

func specFromPB(p *agentpb.Spec) (migrate.Spec, error) {
	if p == nil {
		return migrate.Spec{}, fmt.Errorf("spec: missing")
	}
	s := migrate.Spec{ID: p.GetId(), Image: p.GetImage(), Args: p.GetArgs(), Env: p.GetEnv(), MAC: p.GetMac(),
		MemoryLimit: p.GetMemoryLimit(), NetworkLock: p.GetNetworkLock(), Labels: p.GetLabels(), Adopted: adoptedFromPB(p.GetAdopted())}
	// An adopted container without an address of its own has none.
	if p.GetIp() != "" || s.Adopted == nil {
		ip, err := netip.ParsePrefix(p.GetIp())
		if err != nil {
			return migrate.Spec{}, fmt.Errorf("spec %s: ip %q: %w", s.ID, p.GetIp(), err)
		}
		s.IP = ip
	}
	if err := s.Validate(); err != nil {
		return migrate.Spec{}, err
	}
	return s, nil
}

func leaseToPB(l migrate.Lease) *agentpb.Lease {
	ip := ""
	if l.IP.IsValid() {
		ip = l.IP.String()
	}
	var notAfter int64
	if !l.NotAfter.IsZero() {
		notAfter = l.NotAfter.UnixNano()
	}
	return &agentpb.Lease{Ip: ip, Generation: l.Generation, TtlNs: int64(l.TTL), Revoke: l.Revoke, NotAfterUnixNs: notAfter}
}

func leaseFromPB(p *agentpb.Lease) (migrate.Lease, error) {
	if p == nil {
		return migrate.Lease{}, fmt.Errorf("lease: missing")
	}
	ip, err := netip.ParseAddr(p.GetIp())
	if err != nil || !ip.Is4() {
		return migrate.Lease{}, fmt.Errorf("lease: ip %q: want an IPv4 address", p.GetIp())
	}
	if p.GetTtlNs() < 0 {
		return migrate.Lease{}, fmt.Errorf("lease: negative ttl %d", p.GetTtlNs())
	}
	l := migrate.Lease{IP: ip, Generation: p.GetGeneration(), TTL: time.Duration(p.GetTtlNs()), Revoke: p.GetRevoke()}
	if n := p.GetNotAfterUnixNs(); n != 0 {
		l.NotAfter = time.Unix(0, n)
	}
	return l, nil
}

func leaseStateToPB(s migrate.LeaseState) *agentpb.LeaseState {
	return &agentpb.LeaseState{Held: s.Held, Generation: s.Generation, RemainingNs: int64(s.Remaining), Pinned: s.Pinned}
}

func leaseStateFromPB(p *agentpb.LeaseState) migrate.LeaseState {
	return migrate.LeaseState{Held: p.GetHeld(), Generation: p.GetGeneration(), Remaining: time.Duration(p.GetRemainingNs()), Pinned: p.GetPinned()}
}

func statsToPB(s migrate.CRIUStats) *agentpb.CRIUStats {
	return &agentpb.CRIUStats{FreezingNs: int64(s.Freezing), FrozenNs: int64(s.Frozen), MemdumpNs: int64(s.MemDump),
		MemwriteNs: int64(s.MemWrite), PagesWritten: s.PagesWritten, ForkingNs: int64(s.Forking), RestoreNs: int64(s.Restore)}
}

func statsFromPB(p *agentpb.CRIUStats) migrate.CRIUStats {
	return migrate.CRIUStats{Freezing: time.Duration(p.GetFreezingNs()), Frozen: time.Duration(p.GetFrozenNs()),
		MemDump: time.Duration(p.GetMemdumpNs()), MemWrite: time.Duration(p.GetMemwriteNs()), PagesWritten: p.GetPagesWritten(),
		Forking: time.Duration(p.GetForkingNs()), Restore: time.Duration(p.GetRestoreNs())}
}

func peerToPB(p *migrate.Peer) *agentpb.Peer {
	if p == nil {
		return nil
	}
	return &agentpb.Peer{Name: p.Name, Address: p.Address, Ticket: string(p.Ticket)}
}

func peerFromPB(p *agentpb.Peer) (*migrate.Peer, error) {
	if p == nil {
		return nil, nil
	}
	if p.GetName() == "" || p.GetAddress() == "" || p.GetTicket() == "" {
		return nil, fmt.Errorf("peer: name, address and ticket are required")
	}
	return &migrate.Peer{Name: p.GetName(), Address: p.GetAddress(), Ticket: migrate.Ticket(p.GetTicket())}, nil
}

func imageName(s string) (migrate.ImageName, error) {
	n := migrate.ImageName(s)
	return n, n.Validate()
}

func prefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("address %q: want an IPv4 address/prefix", s)
	}
	return p, nil
}

func addr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("address %q: want an IPv4 address", s)
	}
	return a, nil
}

func duration(ns int64, what string) (time.Duration, error) {
	if ns < 0 || ns > int64(24*time.Hour) {
		return 0, fmt.Errorf("%s: %v is outside 0..24h", what, time.Duration(ns))
	}
	return time.Duration(ns), nil
}
