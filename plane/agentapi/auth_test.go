package agentapi

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi/agentpb"
)

// refusedAtHandshake asserts that a Hello from c never reached the
// backend, came back as ErrUnreachable (the link is down as far as the
// plane can tell), and that the agent's Source counted and logged the
// refusal with reason.
func refusedAtHandshake(t *testing.T, a *testAgent, c *Client, reason mtls.Reason) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	before := a.host.ncalls()
	_, err := c.Hello(ctx)
	if !errors.Is(err, migrate.ErrUnreachable) {
		t.Fatalf("error %v: want a refused handshake (unreachable)", err)
	}
	if a.host.ncalls() != before {
		t.Fatal("the backend was called")
	}
	a.src.waitRefusal(t, "server", reason)
}

func TestPlaintextClientRefused(t *testing.T) {
	p := newPKI(t)
	a := startAgent(t, p, idH1, agentOpts{})
	cc, err := grpc.NewClient("passthrough:///"+a.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = agentpb.NewAgentClient(cc).Hello(ctx, &agentpb.HelloRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext Hello: %v, want Unavailable", err)
	}
	if a.host.ncalls() != 0 {
		t.Fatal("the backend was called")
	}
	a.src.waitRefusal(t, "server", mtls.ReasonPlaintext)
}

func TestClientWithoutCertificateRefused(t *testing.T) {
	p := newPKI(t)
	a := startAgent(t, p, idH1, agentOpts{})
	creds := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}) //nolint:gosec // the server is not what is tested
	cc, err := grpc.NewClient("passthrough:///"+a.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err = agentpb.NewAgentClient(cc).Hello(ctx, &agentpb.HelloRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Hello without a certificate: %v, want Unavailable", err)
	}
	a.src.waitRefusal(t, "server", mtls.ReasonNoCertificate)
}

func TestClientOfUnknownCARefused(t *testing.T) {
	p, other := newPKI(t), newPKI(t)
	a := startAgent(t, p, idH1, agentOpts{})
	// The client trusts the agent's CA, but its own certificate is of
	// another CA.
	f := other.files(t, idPlane, append(p.ca.CertPEM(), other.ca.CertPEM()...))
	refusedAtHandshake(t, a, dial(t, newSource(t, f), a), mtls.ReasonUnknownCA)
}

func TestExpiredClientRefused(t *testing.T) {
	p := newPKI(t)
	a := startAgent(t, p, idH1, agentOpts{})
	now := time.Now()
	f := p.files(t, idPlane, nil, mtls.WithValidity(now.Add(-2*time.Hour), now.Add(-time.Hour)))
	refusedAtHandshake(t, a, dial(t, newSource(t, f), a), mtls.ReasonExpired)
}

func TestNotYetValidClientRefused(t *testing.T) {
	p := newPKI(t)
	a := startAgent(t, p, idH1, agentOpts{})
	now := time.Now()
	f := p.files(t, idPlane, nil, mtls.WithValidity(now.Add(time.Hour), now.Add(2*time.Hour)))
	refusedAtHandshake(t, a, dial(t, newSource(t, f), a), mtls.ReasonNotYetValid)
}

// The agent API is for the plane and other agents: an operator's
// certificate is refused at the handshake.
func TestOperatorRefused(t *testing.T) {
	p := newPKI(t)
	a := startAgent(t, p, idH1, agentOpts{})
	refusedAtHandshake(t, a, dial(t, newSource(t, p.files(t, idAlice, nil)), a), mtls.ReasonRole)
}

// Another agent may call Transfer only (peers_test.go): every plane step
// and the event stream are PermissionDenied, and the backend never sees
// them. The plane, in turn, may not call Transfer.
func TestRoles(t *testing.T) {
	p := newPKI(t)
	ob, err := NewOutbox()
	if err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, p, idH1, agentOpts{outbox: ob})
	agent := newSource(t, p.files(t, idH2, nil))
	c := dial(t, agent, a)
	for _, tc := range roundTripCases() {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.call(testCtx(t), c)
			if err == nil || !strings.Contains(err.Error(), "PermissionDenied") || !strings.Contains(err.Error(), `role "agent"`) {
				t.Fatalf("agent calling %s: %v, want PermissionDenied", tc.method, err)
			}
			if errors.Is(err, migrate.ErrUnreachable) {
				t.Fatalf("a refused call is not an unreachable host: %v", err)
			}
		})
	}
	if n := a.host.ncalls(); n != 0 {
		t.Fatalf("the backend saw %d calls of an agent", n)
	}
	_, raw := rawConn(t, agent, a.addr, idH1)
	es, err := raw.Events(testCtx(t))
	if err == nil {
		_ = es.Send(&agentpb.EventAck{})
		_, err = es.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("agent subscribing to events: %v, want PermissionDenied", err)
	}

	plane := newSource(t, p.files(t, idPlane, nil))
	_, raw = rawConn(t, plane, a.addr, idH1)
	a.host.offer("t", &fakeOffer{to: "plane", data: []byte("x"), expires: time.Now().Add(time.Hour)})
	ts, err := raw.Transfer(testCtx(t), &agentpb.TransferRequest{Ticket: "t"})
	if err == nil {
		_, err = ts.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("plane calling Transfer: %v, want PermissionDenied", err)
	}
	if n := a.host.ncalls(); n != 0 {
		t.Fatalf("the backend saw the plane's Transfer")
	}
}

// The plane refuses an agent that is not the host it dialed: h1's
// certificate when it expects h2.
func TestClientRefusesWrongServer(t *testing.T) {
	p := newPKI(t)
	a := startAgent(t, p, idH1, agentOpts{})
	plane := newSource(t, p.files(t, idPlane, nil))
	c := dialAs(t, plane, a.addr, idH2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Hello(ctx)
	if !errors.Is(err, migrate.ErrUnreachable) {
		t.Fatalf("error %v: want a refused handshake", err)
	}
	if a.host.ncalls() != 0 {
		t.Fatal("the wrong agent's backend was called")
	}
	plane.waitRefusal(t, "client", mtls.ReasonNameMismatch)
	if !strings.Contains(err.Error(), "h2") {
		t.Errorf("error %q does not name the host expected", err)
	}
	// The classification is the Source's, counted above: through gRPC's
	// status only the text of the refusal is left, and mtls.Classify does
	// not read it ("other").
}

// A rotated server certificate is served to new connections without a
// restart; a connection already up keeps the one it was made with.
func TestServerCertificateRotation(t *testing.T) {
	p := newPKI(t)
	a := startAgent(t, p, idH1, agentOpts{srcOpts: []mtls.SourceOption{mtls.WithReloadCheck(0)}})
	plane := newSource(t, p.files(t, idPlane, nil))
	hello := func(api agentpb.AgentClient) string {
		t.Helper()
		var pr peer.Peer
		if _, err := api.Hello(testCtx(t), &agentpb.HelloRequest{}, grpc.Peer(&pr)); err != nil {
			t.Fatal(err)
		}
		return serverSerial(&pr)
	}
	_, old := rawConn(t, plane, a.addr, idH1)
	first := hello(old)
	if first == "" || first != fileSerial(t, a.files) {
		t.Fatalf("first serial %q, source's %q", first, fileSerial(t, a.files))
	}
	for i := range 2 {
		want := p.rotate(t, a.files, idH1)
		_, fresh := rawConn(t, plane, a.addr, idH1)
		if got := hello(fresh); got != want {
			t.Fatalf("rotation %d: a new connection sees serial %s, want the new %s", i, got, want)
		}
		if got := hello(old); got != first {
			t.Fatalf("rotation %d: the old connection sees %s, want its own %s", i, got, first)
		}
	}
	// The Client, connected after the rotation, works as ever.
	if _, err := dial(t, plane, a).Hello(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

// A client certificate that expires while its connection is kept alive
// is refused at the next call on that same connection. The agent's
// Source runs on a clock the test moves, rather than a sleep.
func TestClientCertificateExpiresMidRun(t *testing.T) {
	p := newPKI(t)
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	a := startAgent(t, p, idH1, agentOpts{srcOpts: []mtls.SourceOption{mtls.WithClock(clock)}})
	now := time.Now()
	f := p.files(t, idPlane, nil, mtls.WithValidity(now.Add(-time.Minute), now.Add(2*time.Second)))
	c := dial(t, newSource(t, f), a)
	if _, err := c.Hello(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(testCtx(t), "c"); err != nil {
		t.Fatal(err)
	}
	calls := a.host.ncalls()
	skew.Store(int64(3 * time.Second)) // past the certificate's NotAfter
	_, err := c.Hello(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "Unauthenticated") || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("a call past the client's NotAfter: %v, want Unauthenticated, expired", err)
	}
	if a.host.ncalls() != calls {
		t.Fatal("the backend was called by an expired client")
	}
	if n := a.conns.n.Load(); n != 1 {
		t.Fatalf("%d connections: the refusal must be on the kept-alive one", n)
	}
	a.src.waitRefusal(t, "server", mtls.ReasonExpired)
	// Streams are checked when they open, too. The refusal made the
	// client connect again (so that a renewed certificate would be
	// presented), and the new handshake refuses the expired one.
	es, err := c.api.Events(testCtx(t))
	if err == nil {
		_ = es.Send(&agentpb.EventAck{})
		_, err = es.Recv()
	}
	if code := status.Code(err); code != codes.Unauthenticated && (code != codes.Unavailable || !strings.Contains(err.Error(), "expired")) {
		t.Fatalf("an expired client's stream: %v, want it refused (Unauthenticated, or its new handshake for the expired certificate)", err)
	}
	if n := a.conns.n.Load(); n != 2 {
		t.Fatalf("%d connections: want the refused one and one dialed anew", n)
	}
}

// fileSerial is the serial of the certificate in f.Cert.
func fileSerial(t testing.TB, f mtls.Files) string {
	t.Helper()
	data, err := os.ReadFile(f.Cert)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := mtls.ParseCertificatePEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0].SerialNumber.Text(16)
}

// The plane's side of the same: an agent whose certificate expires while
// the plane's connection to it is up is no longer trusted from the next
// call on (mtls.UnaryClientInterceptor, on the plane's clock).
func TestServerCertificateExpiresMidRun(t *testing.T) {
	p := newPKI(t)
	now := time.Now()
	f := p.files(t, idH1, nil, mtls.WithValidity(now.Add(-time.Minute), now.Add(2*time.Second)))
	a := startAgent(t, p, idH1, agentOpts{files: &f})
	var skew atomic.Int64
	plane := newSource(t, p.files(t, idPlane, nil), mtls.WithClock(func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }))
	c := dial(t, plane, a)
	if _, err := c.Hello(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	skew.Store(int64(3 * time.Second))
	_, err := c.Hello(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "Unauthenticated") || !strings.Contains(err.Error(), "no longer trusted") {
		t.Fatalf("a call to an agent past its NotAfter: %v, want Unauthenticated", err)
	}
	if n := a.conns.n.Load(); n != 1 {
		t.Fatalf("%d connections: the refusal must be on the kept-alive one", n)
	}
	plane.waitRefusal(t, "client", mtls.ReasonExpired)
}
