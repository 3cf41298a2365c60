package agentapi

import (
	"context"
	"errors"
	"io"
	"net"
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
	pods   migrate.PodHost
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
