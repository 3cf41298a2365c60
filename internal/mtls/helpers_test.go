package mtls

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/escape-mtd/escape/internal/atomicfile"
)

var (
	agentH1  = Identity{Role: RoleAgent, Name: "h1"}
	agentH2  = Identity{Role: RoleAgent, Name: "h2"}
	thePlane = Identity{Role: RolePlane, Name: "plane"}
	alice    = Identity{Role: RoleOperator, Name: "alice"}
	loopback = netip.MustParseAddr("127.0.0.1")
)

// newTestCA is a CA whose validity began a day ago, so that certificates
// already expired can be issued under it.
func newTestCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name, 3*365*24*time.Hour, WithClock(func() time.Time { return time.Now().Add(-24 * time.Hour) }))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// writeIdentity issues id under ca and writes ca.crt, <name>.crt and
// <name>.key to a fresh directory.
func writeIdentity(t *testing.T, ca *CA, id Identity, opts ...IssueOption) Files {
	t.Helper()
	return writeIdentityIn(t, t.TempDir(), ca.CertPEM(), ca, id, opts...)
}

func writeIdentityIn(t testing.TB, dir string, caPEM []byte, ca *CA, id Identity, opts ...IssueOption) Files {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(id, opts...)
	if err != nil {
		t.Fatal(err)
	}
	f := IssuedFiles(dir, id.Name)
	writeFile(t, f.CA, caPEM)
	writeFile(t, f.Cert, certPEM)
	writeFile(t, f.Key, keyPEM)
	return f
}

// bundle is a CA file trusting every one of cas.
func bundle(cas ...*CA) []byte {
	var b []byte
	for _, ca := range cas {
		b = append(b, ca.CertPEM()...)
	}
	return b
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func validFor(from, to time.Duration) IssueOption {
	now := time.Now()
	return WithValidity(now.Add(from), now.Add(to))
}

// observed is a Source with its own metrics registry and an observed log.
type observed struct {
	*Source
	reg  *prometheus.Registry
	logs *observer.ObservedLogs
}

func newObserved(t *testing.T, f Files, opts ...SourceOption) *observed {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	reg := prometheus.NewRegistry()
	src, err := NewSource(f, append([]SourceOption{WithLogger(zap.New(core)), WithMetrics(reg)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return &observed{Source: src, reg: reg, logs: logs}
}

// metric is the value of the series name{labels} in o's registry; 0 when
// absent.
func (o *observed) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := o.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			want := map[string]string{}
			for i := 0; i+1 < len(labels); i += 2 {
				want[labels[i]] = labels[i+1]
			}
			for _, lp := range m.GetLabel() {
				if v, ok := want[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	return 0
}

func (o *observed) refusals(t *testing.T, side string, r Reason) float64 {
	t.Helper()
	return o.metric(t, "escape_tls_refusals_total", "side", side, "reason", string(r))
}

// totalRefusals is the sum over every reason of side.
func (o *observed) totalRefusals(t *testing.T, side string) float64 {
	t.Helper()
	var n float64
	for _, r := range Reasons() {
		n += o.refusals(t, side, r)
	}
	return n
}

// eventually polls cond for up to 10 s: the other end of a socket logs and
// counts in its own goroutine.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// refusalLog is the one log line of a refusal of reason by side.
func (o *observed) refusalLog(t *testing.T, side string, r Reason) map[string]any {
	t.Helper()
	var entries []observer.LoggedEntry
	eventually(t, "refusal log line "+side+"/"+string(r), func() bool {
		entries = o.logs.FilterLevelExact(zapcore.WarnLevel).
			FilterField(zap.String("side", side)).FilterField(zap.String("reason", string(r))).All()
		return len(entries) > 0
	})
	if len(entries) != 1 {
		t.Fatalf("%d refusal log lines for %s/%s, want 1", len(entries), side, r)
	}
	return entries[0].ContextMap()
}

// countingListener counts the connections it accepted.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// grpcServer is a gRPC health server on loopback behind src.
type grpcServer struct {
	addr  string
	conns *countingListener
	// seen holds the identity of the last authorized caller.
	seen atomic.Pointer[Identity]
}

func startGRPC(t *testing.T, src *Source, authorize Authorizer, allow ...Role) *grpcServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := &grpcServer{addr: l.Addr().String(), conns: &countingListener{Listener: l}}
	record := func(ctx context.Context, method string, id Identity) error {
		gs.seen.Store(&id)
		if authorize != nil {
			return authorize(ctx, method, id)
		}
		return nil
	}
	s := grpc.NewServer(grpc.Creds(src.ServerCredentials(allow...)),
		grpc.ChainUnaryInterceptor(UnaryServerInterceptor(src, record)),
		grpc.ChainStreamInterceptor(StreamServerInterceptor(src, record)))
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(gs.conns) //nolint:errcheck // Stop ends it
	t.Cleanup(s.Stop)
	return gs
}

func dialGRPC(t *testing.T, src *Source, addr string, expect Identity) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(src.ClientCredentials(expect)),
		grpc.WithChainUnaryInterceptor(UnaryClientInterceptor(src)),
		grpc.WithChainStreamInterceptor(StreamClientInterceptor(src)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// healthCheck calls Health/Check and returns the server's certificate
// serial as the client saw it.
func healthCheck(cc *grpc.ClientConn) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var p peer.Peer
	_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
	if err != nil {
		return "", err
	}
	return serialOf(&p), nil
}

func serialOf(p *peer.Peer) string {
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return ""
	}
	return info.State.PeerCertificates[0].SerialNumber.Text(16)
}

// serialOfPEM is the serial of the first certificate of a PEM file.
func serialOfPEM(t *testing.T, data []byte) string {
	t.Helper()
	certs, err := ParseCertificatePEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0].SerialNumber.Text(16)
}

func mustContain(t *testing.T, what, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s %q does not contain %q", what, s, w)
		}
	}
}
