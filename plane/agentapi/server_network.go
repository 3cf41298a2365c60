package agentapi

// The address, guard and lease steps of the agent API.

import (
	"context"
	"net/netip"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi/agentpb"
)

func (s *Server) PrepareNetwork(ctx context.Context, r *agentpb.NetworkRequest) (*agentpb.StepReply, error) {
	spec, err := specFromPB(r.GetSpec())
	if err != nil {
		return nil, errInvalid{err}
	}
	return step(s.local.PrepareNetwork(ctx, spec, r.GetAddress()))
}

func (s *Server) RemoveNetwork(ctx context.Context, r *agentpb.ContainerRef) (*agentpb.StepReply, error) {
	if err := migrate.ValidID(r.GetId()); err != nil {
		return nil, errInvalid{err}
	}
	return step(s.local.RemoveNetwork(ctx, r.GetId()))
}

func (s *Server) ReleaseAddress(ctx context.Context, r *agentpb.AddressRequest) (*agentpb.StepReply, error) {
	if err := migrate.ValidID(r.GetId()); err != nil {
		return nil, errInvalid{err}
	}
	p, err := prefix(r.GetIp())
	if err != nil {
		return nil, errInvalid{err}
	}
	return step(s.local.ReleaseAddress(ctx, r.GetId(), p))
}

func (s *Server) ClaimAddress(ctx context.Context, r *agentpb.ClaimRequest) (*agentpb.StepReply, error) {
	if err := migrate.ValidID(r.GetId()); err != nil {
		return nil, errInvalid{err}
	}
	p, err := prefix(r.GetIp())
	if err != nil {
		return nil, errInvalid{err}
	}
	look, err := duration(r.GetLastLookNs(), "last look")
	if err != nil {
		return nil, errInvalid{err}
	}
	l, err := leaseFromPB(r.GetLease())
	if err != nil {
		return nil, errInvalid{err}
	}
	return step(s.local.ClaimAddress(ctx, r.GetId(), p, migrate.ClaimOptions{LastLook: look, Lease: l}))
}

func (s *Server) Announce(ctx context.Context, r *agentpb.AnnounceRequest) (*agentpb.StepReply, error) {
	if err := migrate.ValidID(r.GetId()); err != nil {
		return nil, errInvalid{err}
	}
	a, err := addr(r.GetIp())
	if err != nil {
		return nil, errInvalid{err}
	}
	iv, err := duration(r.GetIntervalNs(), "interval")
	if err != nil {
		return nil, errInvalid{err}
	}
	if r.GetRounds() < 1 || r.GetRounds() > 100 {
		return nil, invalid("announce: rounds %d: want 1..100", r.GetRounds())
	}
	return step(s.local.Announce(ctx, r.GetId(), a, migrate.AnnounceOptions{Rounds: int(r.GetRounds()), Interval: iv}))
}

func probeArgs(r *agentpb.ProbeRequest) (netip.Addr, time.Duration, error) {
	a, err := addr(r.GetIp())
	if err != nil {
		return netip.Addr{}, 0, errInvalid{err}
	}
	d, err := duration(r.GetDurationNs(), "probe duration")
	if err != nil || d > 10*time.Minute {
		return netip.Addr{}, 0, invalid("probe duration %v: want 0..10m", time.Duration(r.GetDurationNs()))
	}
	return a, d, nil
}

func (s *Server) Probe(ctx context.Context, r *agentpb.ProbeRequest) (*agentpb.ProbeReply, error) {
	a, d, err := probeArgs(r)
	if err != nil {
		return nil, err
	}
	res, err := s.local.Probe(ctx, a, r.GetIgnoreMac(), d)
	if err != nil {
		return nil, err
	}
	return &agentpb.ProbeReply{Taken: res.Taken, By: res.By}, nil
}

func (s *Server) StartSentry(ctx context.Context, r *agentpb.ProbeRequest) (*agentpb.SentryRef, error) {
	a, d, err := probeArgs(r)
	if err != nil {
		return nil, err
	}
	id, err := s.local.StartSentry(ctx, a, r.GetIgnoreMac(), d)
	if err != nil {
		return nil, err
	}
	return &agentpb.SentryRef{Id: string(id)}, nil
}

func (s *Server) StopSentry(ctx context.Context, r *agentpb.SentryRef) (*agentpb.ProbeReply, error) {
	res, err := s.local.StopSentry(ctx, migrate.SentryID(r.GetId()))
	if err != nil {
		return nil, err
	}
	return &agentpb.ProbeReply{Taken: res.Taken, By: res.By}, nil
}

func (s *Server) SetGuards(ctx context.Context, r *agentpb.GuardRequest) (*agentpb.StepReply, error) {
	if err := migrate.ValidID(r.GetId()); err != nil {
		return nil, errInvalid{err}
	}
	g, err := guards(r.GetGuards())
	if err != nil {
		return nil, err
	}
	return step(s.local.SetGuards(ctx, r.GetId(), g, r.GetOn()))
}

func (s *Server) NetworkLocks(ctx context.Context, r *agentpb.NetworkLocksRequest) (*agentpb.NetworkLocksReply, error) {
	if err := migrate.ValidID(r.GetId()); err != nil {
		return nil, errInvalid{err}
	}
	names, err := s.local.NetworkLocks(ctx, r.GetId(), r.GetRemove())
	if err != nil {
		return nil, err
	}
	return &agentpb.NetworkLocksReply{Tables: names}, nil
}

func (s *Server) Lease(ctx context.Context, r *agentpb.LeaseRequest) (*agentpb.LeaseReply, error) {
	if err := migrate.ValidID(r.GetId()); err != nil {
		return nil, errInvalid{err}
	}
	l, err := leaseFromPB(r.GetLease())
	if err != nil {
		return nil, errInvalid{err}
	}
	st, err := s.local.Lease(ctx, r.GetId(), l)
	if err != nil {
		return nil, err
	}
	return &agentpb.LeaseReply{State: leaseStateToPB(st)}, nil
}
