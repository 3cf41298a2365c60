package agentapi

// The container steps of the agent API: each decodes its request, runs
// the host's step and encodes what it did.

import (
	"context"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi/agentpb"
)

func (s *Server) Status(ctx context.Context, r *agentpb.ContainerRef) (*agentpb.ContainerStatus, error) {
	if err := migrate.ValidID(r.GetId()); err != nil {
		return nil, errInvalid{err}
	}
	st, err := s.local.Status(ctx, r.GetId())
	if err != nil {
		return nil, err
	}
	out := &agentpb.ContainerStatus{Status: string(st.Status), Pid: st.PID, MemoryBytes: st.MemoryBytes, Network: st.Network,
		NetworkLocks: st.NetworkLocks, Lease: leaseStateToPB(st.Lease)}
	for _, a := range st.Addresses {
		out.Addresses = append(out.Addresses, a.String())
	}
	return out, nil
}

func (s *Server) Start(ctx context.Context, r *agentpb.StartRequest) (*agentpb.StepReply, error) {
	spec, err := specFromPB(r.GetSpec())
	if err != nil {
		return nil, errInvalid{err}
	}
	opts := migrate.StartOptions{Address: r.GetAddress()}
	if r.GetAddress() {
		if opts.Lease, err = leaseFromPB(r.GetLease()); err != nil {
			return nil, errInvalid{err}
		}
	}
	return step(s.local.Start(ctx, spec, opts))
}

func (s *Server) Restart(ctx context.Context, r *agentpb.SpecRequest) (*agentpb.StepReply, error) {
	spec, err := specFromPB(r.GetSpec())
	if err != nil {
		return nil, errInvalid{err}
	}
	return step(s.local.Restart(ctx, spec))
}

func (s *Server) Kill(ctx context.Context, r *agentpb.ContainerRef) (*agentpb.StepReply, error) {
	if err := migrate.ValidID(r.GetId()); err != nil {
		return nil, errInvalid{err}
	}
	return step(s.local.Kill(ctx, r.GetId()))
}

func (s *Server) Remove(ctx context.Context, r *agentpb.ContainerRef) (*agentpb.StepReply, error) {
	if err := migrate.ValidID(r.GetId()); err != nil {
		return nil, errInvalid{err}
	}
	return step(s.local.Remove(ctx, r.GetId()))
}

func step(r migrate.StepResult, err error) (*agentpb.StepReply, error) {
	if err != nil {
		return nil, err
	}
	return &agentpb.StepReply{Did: r.Did}, nil
}

func (s *Server) Checkpoint(ctx context.Context, r *agentpb.CheckpointRequest) (*agentpb.CheckpointReply, error) {
	if err := migrate.ValidID(r.GetId()); err != nil {
		return nil, errInvalid{err}
	}
	img, err := imageName(r.GetImage())
	if err != nil {
		return nil, errInvalid{err}
	}
	res, err := s.local.Checkpoint(ctx, r.GetId(), img, migrate.CheckpointOptions{Exit: r.GetExit(), Paused: r.GetPaused(), RootFS: r.GetRootfs()})
	if err != nil {
		return nil, err
	}
	return &agentpb.CheckpointReply{Did: res.Did, Bytes: res.Bytes, TookNs: int64(res.Took), Criu: statsToPB(res.CRIU)}, nil
}

func restoreReply(res migrate.RestoreResult, err error) (*agentpb.RestoreReply, error) {
	if err != nil {
		return nil, err
	}
	return &agentpb.RestoreReply{Did: res.Did, Lazy: res.Lazy, TookNs: int64(res.Took), Criu: statsToPB(res.CRIU)}, nil
}

func (s *Server) Restore(ctx context.Context, r *agentpb.RestoreRequest) (*agentpb.RestoreReply, error) {
	spec, err := specFromPB(r.GetSpec())
	if err != nil {
		return nil, errInvalid{err}
	}
	img, err := imageName(r.GetImage())
	if err != nil {
		return nil, errInvalid{err}
	}
	return restoreReply(s.local.Restore(ctx, spec, img, migrate.RestoreOptions{Lazy: r.GetLazy(), ClearLocks: r.GetClearLocks(),
		TCPClose: r.GetTcpClose(), Fresh: r.GetFresh()}))
}

func guards(g uint32) (migrate.Guards, error) {
	if g&^uint32(migrate.GuardResets|migrate.GuardHold) != 0 {
		return 0, invalid("guards %#x: unknown bits", g)
	}
	return migrate.Guards(g), nil
}

// staged decodes what Stage and StartStaged share: the spec, the image
// and the guards.
func staged(p *agentpb.Spec, image string, bits uint32) (migrate.Spec, migrate.ImageName, migrate.Guards, error) {
	spec, err := specFromPB(p)
	if err != nil {
		return migrate.Spec{}, "", 0, errInvalid{err}
	}
	img, err := imageName(image)
	if err != nil {
		return migrate.Spec{}, "", 0, errInvalid{err}
	}
	g, err := guards(bits)
	if err != nil {
		return migrate.Spec{}, "", 0, err
	}
	return spec, img, g, nil
}

func (s *Server) Stage(ctx context.Context, r *agentpb.StageRequest) (*agentpb.StepReply, error) {
	spec, img, g, err := staged(r.GetSpec(), r.GetImage(), r.GetGuards())
	if err != nil {
		return nil, err
	}
	return step(s.local.Stage(ctx, spec, img, migrate.StageOptions{Guards: g}))
}

func (s *Server) StartStaged(ctx context.Context, r *agentpb.StartStagedRequest) (*agentpb.RestoreReply, error) {
	spec, img, g, err := staged(r.GetSpec(), r.GetImage(), r.GetGuards())
	if err != nil {
		return nil, err
	}
	return restoreReply(s.local.StartStaged(ctx, spec, img, migrate.StartStagedOptions{Lazy: r.GetLazy(), Guards: g}))
}
