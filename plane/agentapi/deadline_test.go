package agentapi

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi/agentpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// deadlineBackend is an agent whose Hello notes each call that reaches it
// and the deadline of the context it was given.
type deadlineBackend struct {
	agentpb.UnimplementedAgentServer
	mu       sync.Mutex
	calls    int
	deadline time.Time
	bounded  bool
}

func (b *deadlineBackend) Hello(ctx context.Context, _ *agentpb.HelloRequest) (*agentpb.HelloReply, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	b.deadline, b.bounded = ctx.Deadline()
	return &agentpb.HelloReply{Name: "h1"}, nil
}

func (b *deadlineBackend) seen() (int, time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls, b.deadline, b.bounded
}

// serveDeadlines serves b on loopback behind the deadline interceptor with
// the agent's clock skewed by *ahead (insecure credentials: the mTLS path
// is tested elsewhere).
func serveDeadlines(t *testing.T, b *deadlineBackend, ahead *atomic.Int64) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	clock := func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	s := grpc.NewServer(grpc.ChainUnaryInterceptor(DeadlineServerInterceptor(clock)))
	agentpb.RegisterAgentServer(s, b)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

func dialRaw(t *testing.T, addr string, opts ...grpc.DialOption) agentpb.AgentClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentpb.NewAgentClient(conn)
}

func TestDeadlineInTimeCallPasses(t *testing.T) {
	b := &deadlineBackend{}
	var ahead atomic.Int64
	addr := serveDeadlines(t, b, &ahead)
	c, err := NewClient("h1", addr, WithClientCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	want, _ := ctx.Deadline()
	if _, err := c.Hello(ctx); err != nil {
		t.Fatalf("stamped call in time: %v", err)
	}
	n, got, ok := b.seen()
	if n != 1 || !ok {
		t.Fatalf("backend saw %d calls, deadline set %v", n, ok)
	}
	// The handler is bounded by the stamp itself, not by gRPC's relative
	// timeout counted from the arrival.
	if !got.Equal(want) {
		t.Errorf("handler deadline %v, want the stamp %v", got, want)
	}
}

func TestDeadlineDefaultBoundsUnboundedCall(t *testing.T) {
	b := &deadlineBackend{}
	var ahead atomic.Int64
	addr := serveDeadlines(t, b, &ahead)
	api := dialRaw(t, addr, grpc.WithChainUnaryInterceptor(DeadlineClientInterceptor(time.Minute)))
	before := time.Now()
	if _, err := api.Hello(context.Background(), &agentpb.HelloRequest{}); err != nil {
		t.Fatalf("call without a deadline: %v", err)
	}
	_, got, ok := b.seen()
	if !ok || got.Before(before.Add(time.Minute)) || got.After(time.Now().Add(time.Minute)) {
		t.Errorf("handler deadline %v (set %v), want about now+1m", got, ok)
	}
}

func TestDeadlineLateCallRefused(t *testing.T) {
	b := &deadlineBackend{}
	var ahead atomic.Int64
	addr := serveDeadlines(t, b, &ahead)
	c, err := NewClient("h1", addr, WithClientCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The agent's clock says the request arrives 3 s after its 2 s
	// deadline: as a healed partition delivers one late.
	ahead.Store(int64(5 * time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = c.Hello(ctx)
	if err == nil {
		t.Fatal("late call accepted")
	}
	if n, _, _ := b.seen(); n != 0 {
		t.Errorf("the late call reached the backend (%d calls)", n)
	}
	// A refusal is an answer: the plane knows nothing was done.
	if !errors.Is(err, migrate.ErrRequestExpired) {
		t.Errorf("late call: %v, want ErrRequestExpired", err)
	}
	if errors.Is(err, migrate.ErrUnreachable) {
		t.Errorf("late call: %v is ErrUnreachable: the plane would think it may have been done", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("late call: %v is context.DeadlineExceeded", err)
	}
	if ctx.Err() != nil {
		t.Errorf("the call's own context expired (%v): the refusal must come from the agent", ctx.Err())
	}
}

func TestDeadlineUnstampedCallRefused(t *testing.T) {
	b := &deadlineBackend{}
	var ahead atomic.Int64
	addr := serveDeadlines(t, b, &ahead)
	api := dialRaw(t, addr) // no stamping interceptor
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := api.Hello(ctx, &agentpb.HelloRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("unstamped call: %v, want InvalidArgument", err)
	}
	if n, _, _ := b.seen(); n != 0 {
		t.Errorf("the unstamped call reached the backend (%d calls)", n)
	}
}

// TestDeadlineHandlerTimeoutStaysUnreachable: a plain DeadlineExceeded (the
// handler ran out of time, maybe having done the step) is not a refusal.
func TestDeadlineHandlerTimeoutStaysUnreachable(t *testing.T) {
	err := fromStatus("h1", "hello", status.Error(codes.DeadlineExceeded, "context deadline exceeded"))
	if !errors.Is(err, migrate.ErrUnreachable) || errors.Is(err, migrate.ErrRequestExpired) {
		t.Errorf("handler timeout: %v: want ErrUnreachable, not ErrRequestExpired", err)
	}
	err = fromStatus("h1", "hello", toStatus(errors.Join(errors.New("x"), migrate.ErrRequestExpired)))
	if !errors.Is(err, migrate.ErrRequestExpired) || errors.Is(err, migrate.ErrUnreachable) {
		t.Errorf("refusal: %v: want ErrRequestExpired, not ErrUnreachable", err)
	}
}
