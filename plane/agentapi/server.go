package agentapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi/agentpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// Local is what a host's agent serves: its own steps (migrate/node) and
// the offers it made.
type Local interface {
	migrate.Host
	// ServeOffer writes what ticket offers to w, if requester is the host
	// it was offered to.
	ServeOffer(ctx context.Context, ticket migrate.Ticket, requester string, w io.Writer) error
}

// Role is what a caller's certificate says it is.
type Role string

const (
	RolePlane Role = "plane"
	RoleAgent Role = "agent"
)

// Caller is who calls, as the transport authenticated it.
type Caller struct {
	Role Role
	Name string
}

// CallerFunc tells who is calling, from a call's context (the peer's
// verified certificate).
type CallerFunc func(ctx context.Context) (Caller, error)

// Server serves a host's agent API.
type Server struct {
	agentpb.UnimplementedAgentServer
	local  Local
	outbox *Outbox
	caller CallerFunc
	creds  credentials.TransportCredentials
	extra  []grpc.ServerOption
	log    *zap.Logger
	grpc   *grpc.Server
	// stopping is closed when Serve's context ends: the event streams,
	// which never end by themselves, end then, so that the graceful stop
	// waits only for steps under way.
	stopping chan struct{}
	stopOnce sync.Once
	// now is the agent's clock, for request deadlines (deadline.go).
	now func() time.Time
}

// ServerOption tunes a Server.
type ServerOption func(*Server)

// WithServerCredentials sets the transport credentials (required: mutual
// TLS, internal/mtls).
func WithServerCredentials(c credentials.TransportCredentials) ServerOption {
	return func(s *Server) { s.creds = c }
}

// WithCaller sets how the caller is known (required).
func WithCaller(f CallerFunc) ServerOption { return func(s *Server) { s.caller = f } }

// WithOutbox serves the sensor's events from o (without: Events fails).
func WithOutbox(o *Outbox) ServerOption { return func(s *Server) { s.outbox = o } }

// WithServerLogger sets the logger.
func WithServerLogger(l *zap.Logger) ServerOption { return func(s *Server) { s.log = l } }

// WithGRPCOptions adds server options, such as interceptors that check a
// peer's certificate on every call.
func WithGRPCOptions(o ...grpc.ServerOption) ServerOption {
	return func(s *Server) { s.extra = append(s.extra, o...) }
}

// WithServerClock sets the clock request deadlines are checked against
// (default time.Now; for tests).
func WithServerClock(now func() time.Time) ServerOption { return func(s *Server) { s.now = now } }

// maxConnectionAge makes clients reconnect, and so present their current
// certificate, at least this often.
const maxConnectionAge = 10 * time.Minute

// NewServer returns a server for local.
func NewServer(local Local, opts ...ServerOption) (*Server, error) {
	s := &Server{local: local, log: zap.NewNop(), stopping: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	if local == nil || s.creds == nil || s.caller == nil {
		return nil, errors.New("agent server: local steps, transport credentials and a caller function are required")
	}
	gopts := append([]grpc.ServerOption{
		grpc.Creds(s.creds),
		// Authorised callers only; then a request that arrives after its
		// stamped deadline, or carries none, is refused (deadline.go).
		// Streams carry no deadline: they are long-lived by design.
		grpc.ChainUnaryInterceptor(s.authorizeUnary, DeadlineServerInterceptor(s.now)),
		grpc.ChainStreamInterceptor(s.authorizeStream),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: maxConnectionAge, MaxConnectionAgeGrace: time.Minute,
			Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(256),
	}, s.extra...)
	s.grpc = grpc.NewServer(gopts...)
	agentpb.RegisterAgentServer(s.grpc, s)
	return s, nil
}

// Serve answers on l until ctx ends; calls under way get a grace period to
// finish (a migration's step runs to its end).
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.stopOnce.Do(func() { close(s.stopping) })
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		s.grpc.Stop()
	}
	return nil
}

// allowed lists the roles that may call each method; a method missing
// here is refused.
var allowed = map[string][]Role{}

func init() {
	for _, m := range agentpb.Agent_ServiceDesc.Methods {
		allowed["/"+agentpb.Agent_ServiceDesc.ServiceName+"/"+m.MethodName] = []Role{RolePlane}
	}
	for _, m := range agentpb.Agent_ServiceDesc.Streams {
		allowed["/"+agentpb.Agent_ServiceDesc.ServiceName+"/"+m.StreamName] = []Role{RolePlane}
	}
	allowed[agentpb.Agent_Transfer_FullMethodName] = []Role{RoleAgent}
}

type callerKey struct{}

func (s *Server) authorize(ctx context.Context, method string) (context.Context, error) {
	c, err := s.caller(ctx)
	if err != nil {
		s.log.Warn("refused a call: caller unknown", zap.String("method", method), zap.Error(err))
		return ctx, status.Errorf(codes.Unauthenticated, "%s: %v", method, err)
	}
	for _, r := range allowed[method] {
		if r == c.Role {
			return context.WithValue(ctx, callerKey{}, c), nil
		}
	}
	s.log.Warn("refused a call: role not allowed", zap.String("method", method), zap.String("role", string(c.Role)), zap.String("caller", c.Name))
	return ctx, status.Errorf(codes.PermissionDenied, "%s: role %q may not call it", method, c.Role)
}

func (s *Server) authorizeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := s.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	resp, err := handler(ctx, req)
	s.log.Debug("step", zap.String("method", info.FullMethod), zap.Duration("took", time.Since(start)), zap.Error(err))
	return resp, toStatus(err)
}

type authorizedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a authorizedStream) Context() context.Context { return a.ctx }

func (s *Server) authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := s.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return toStatus(handler(srv, authorizedStream{ss, ctx}))
}

func callerOf(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

func (s *Server) Hello(ctx context.Context, _ *agentpb.HelloRequest) (*agentpb.HelloReply, error) {
	h, err := s.local.Hello(ctx)
	if err != nil {
		return nil, err
	}
	return &agentpb.HelloReply{Name: h.Name, Version: h.Version, SharedStorage: h.SharedStorage, LazyRestore: h.LazyRestore, BootId: h.BootID}, nil
}

// Events streams the outbox: it starts where the plane's first ack says,
// sends batches as events arrive, and forgets what the plane acknowledges.
func (s *Server) Events(stream agentpb.Agent_EventsServer) error {
	if s.outbox == nil {
		return status.Error(codes.FailedPrecondition, "events: this agent runs no sensor")
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	after, lost := s.outbox.start(first.GetInstance(), first.GetSeq())
	if first.GetInstance() == s.outbox.instance {
		s.outbox.ack(first.GetSeq())
	}
	acks := make(chan error, 1)
	go func() {
		for {
			a, err := stream.Recv()
			if err != nil {
				acks <- err
				return
			}
			if a.GetInstance() == s.outbox.instance {
				s.outbox.ack(a.GetSeq())
			}
		}
	}()
	for {
		batch, gap, wake, closed := s.outbox.batch(after, 256)
		if len(batch) > 0 || gap+lost > 0 {
			out := &agentpb.EventBatch{Instance: s.outbox.instance, Dropped: gap + lost}
			for _, q := range batch {
				out.Events = append(out.Events, &agentpb.Event{Seq: q.seq, Json: q.json})
			}
			if err := stream.Send(out); err != nil {
				return err
			}
			lost = 0
			if len(batch) > 0 {
				after = batch[len(batch)-1].seq
			} else {
				after += gap
			}
			continue
		}
		if closed {
			return status.Error(codes.Unavailable, "events: the sensor stopped")
		}
		select {
		case <-wake:
		case err := <-acks:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-s.stopping:
			// The plane subscribes again, to this agent once it is back.
			return status.Error(codes.Unavailable, "events: the agent is shutting down")
		}
	}
}

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

func (s *Server) VerifyImage(ctx context.Context, r *agentpb.ImageRef) (*agentpb.VerifyImageReply, error) {
	img, err := imageName(r.GetImage())
	if err != nil {
		return nil, errInvalid{err}
	}
	n, err := s.local.VerifyImage(ctx, img)
	if err != nil {
		return nil, err
	}
	return &agentpb.VerifyImageReply{Bytes: n}, nil
}

func (s *Server) DropImage(ctx context.Context, r *agentpb.ImageRef) (*agentpb.StepReply, error) {
	img, err := imageName(r.GetImage())
	if err != nil {
		return nil, errInvalid{err}
	}
	return step(s.local.DropImage(ctx, img))
}

func (s *Server) EnsureImage(ctx context.Context, r *agentpb.EnsureImageRequest) (*agentpb.EnsureImageReply, error) {
	if err := migrate.ValidImageRef(r.GetRef()); err != nil {
		return nil, errInvalid{err}
	}
	from, err := peerFromPB(r.GetFrom())
	if err != nil {
		return nil, errInvalid{err}
	}
	res, err := s.local.EnsureImage(ctx, r.GetRef(), from)
	if err != nil {
		return nil, err
	}
	return &agentpb.EnsureImageReply{Did: res.Did, Bytes: res.Bytes}, nil
}

func (s *Server) Offer(ctx context.Context, r *agentpb.OfferRequest) (*agentpb.OfferReply, error) {
	o := migrate.Offer{Kind: migrate.OfferKind(r.GetKind()), Name: r.GetName(), To: r.GetTo()}
	switch o.Kind {
	case migrate.OfferCheckpoint:
		if _, err := imageName(o.Name); err != nil {
			return nil, errInvalid{err}
		}
	case migrate.OfferImage:
		if err := migrate.ValidImageRef(o.Name); err != nil {
			return nil, errInvalid{err}
		}
	default:
		return nil, invalid("offer: kind %q: want checkpoint or image", r.GetKind())
	}
	if o.To == "" {
		return nil, invalid("offer: to: the host allowed to fetch it is required")
	}
	t, err := s.local.Offer(ctx, o)
	if err != nil {
		return nil, err
	}
	return &agentpb.OfferReply{Ticket: string(t)}, nil
}

func (s *Server) Fetch(ctx context.Context, r *agentpb.FetchRequest) (*agentpb.FetchReply, error) {
	img, err := imageName(r.GetImage())
	if err != nil {
		return nil, errInvalid{err}
	}
	from, err := peerFromPB(r.GetFrom())
	if err != nil || from == nil {
		return nil, invalid("fetch %s: from: %v", img, errors.Join(err, errors.New("the peer that offered it is required")))
	}
	res, err := s.local.Fetch(ctx, img, *from)
	if err != nil {
		return nil, err
	}
	return &agentpb.FetchReply{Did: res.Did, Bytes: res.Bytes, WireBytes: res.Wire, Files: int64(res.Files), TookNs: int64(res.Took)}, nil
}

// chunkSize is the payload of one Transfer message: large enough that the
// per-message cost is lost in the copy, well under gRPC's 4 MiB limit.
const chunkSize = 1 << 20

type chunkWriter struct {
	stream agentpb.Agent_TransferServer
}

func (w chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := p[:min(len(p), chunkSize)]
		if err := w.stream.Send(&agentpb.Chunk{Data: c}); err != nil {
			return n, err
		}
		n += len(c)
		p = p[len(c):]
	}
	return n, nil
}

func (s *Server) Transfer(r *agentpb.TransferRequest, stream agentpb.Agent_TransferServer) error {
	c := callerOf(stream.Context())
	if r.GetTicket() == "" {
		return invalid("transfer: ticket: required")
	}
	// Buffered so that small writes become one message each megabyte.
	bw := bufio.NewWriterSize(chunkWriter{stream}, chunkSize)
	if err := s.local.ServeOffer(stream.Context(), migrate.Ticket(r.GetTicket()), c.Name, bw); err != nil {
		return fmt.Errorf("transfer to %s: %w", c.Name, err)
	}
	return bw.Flush()
}

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
