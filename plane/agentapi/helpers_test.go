package agentapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi/agentpb"
)

// The tests run real gRPC over real TLS 1.3 on loopback TCP, with
// certificates from internal/mtls's CA, in front of a recording fake of
// the host's steps (fakeHost): they test the API layer, not the node.

var (
	idPlane = mtls.Identity{Role: mtls.RolePlane, Name: "plane"}
	idH1    = mtls.Identity{Role: mtls.RoleAgent, Name: "h1"}
	idH2    = mtls.Identity{Role: mtls.RoleAgent, Name: "h2"}
	idH3    = mtls.Identity{Role: mtls.RoleAgent, Name: "h3"}
	idAlice = mtls.Identity{Role: mtls.RoleOperator, Name: "alice"}
)

// pki is a test CA whose validity began a day ago, so that expired
// certificates can be issued under it.
type pki struct {
	ca *mtls.CA
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	ca, err := mtls.NewCA("test-ca", 3*365*24*time.Hour, mtls.WithClock(func() time.Time { return time.Now().Add(-24 * time.Hour) }))
	if err != nil {
		t.Fatal(err)
	}
	return &pki{ca: ca}
}

// files issues id and writes ca.crt, <name>.crt and <name>.key (trusting
// caPEM, the own CA when nil) into a fresh directory.
func (p *pki) files(t testing.TB, id mtls.Identity, caPEM []byte, opts ...mtls.IssueOption) mtls.Files {
	t.Helper()
	if caPEM == nil {
		caPEM = p.ca.CertPEM()
	}
	certPEM, keyPEM, err := p.ca.Issue(id, opts...)
	if err != nil {
		t.Fatal(err)
	}
	f := mtls.IssuedFiles(t.TempDir(), id.Name)
	writeFile(t, f.CA, caPEM)
	writeFile(t, f.Cert, certPEM)
	writeFile(t, f.Key, keyPEM)
	return f
}

// rotate replaces f's certificate and key with a freshly issued pair (by
// atomic rename, as `certs issue` does) and returns the new serial.
func (p *pki) rotate(t testing.TB, f mtls.Files, id mtls.Identity) string {
	t.Helper()
	certPEM, keyPEM, err := p.ca.Issue(id)
	if err != nil {
		t.Fatal(err)
	}
	// Key first, then the certificate: a look in between sees a key that is
	// not the certificate's and keeps the old pair (mtls.Source).
	writeFile(t, f.Key, keyPEM)
	writeFile(t, f.Cert, certPEM)
	certs, err := mtls.ParseCertificatePEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0].SerialNumber.Text(16)
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// source is an mtls.Source with its own metrics registry and an observed
// log.
type source struct {
	*mtls.Source
	reg  *prometheus.Registry
	logs *observer.ObservedLogs
}

func newSource(t testing.TB, f mtls.Files, opts ...mtls.SourceOption) *source {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	reg := prometheus.NewRegistry()
	src, err := mtls.NewSource(f, append([]mtls.SourceOption{mtls.WithLogger(zap.New(core)), mtls.WithMetrics(reg)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return &source{Source: src, reg: reg, logs: logs}
}

// refusals is escape_tls_refusals_total{side, reason}.
func (s *source) refusals(t testing.TB, side string, r mtls.Reason) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "escape_tls_refusals_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["side"] == side && labels["reason"] == string(r) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// waitRefusal waits for the refusal side/r to be counted and logged once
// at warn level, with the reason in the log line.
func (s *source) waitRefusal(t testing.TB, side string, r mtls.Reason) {
	t.Helper()
	eventually(t, fmt.Sprintf("refusal %s/%s counted", side, r), func() bool { return s.refusals(t, side, r) >= 1 })
	eventually(t, fmt.Sprintf("refusal %s/%s logged", side, r), func() bool {
		return s.logs.FilterLevelExact(zapcore.WarnLevel).FilterField(zap.String("side", side)).
			FilterField(zap.String("reason", string(r))).Len() >= 1
	})
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countingListener counts the connections accepted.
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

// testAgent is an agentapi.Server on loopback, wired as the node agent
// wires it (cmd/escape-sensor/agent.go): plane and agent roles at the TLS
// layer, the mtls interceptors that recheck validity on every call, the
// caller from the peer's certificate.
type testAgent struct {
	name   string
	addr   string
	files  mtls.Files
	src    *source
	host   *fakeHost
	outbox *Outbox
	conns  *countingListener
	server *Server
	stop   func() error // ends Serve; returns its error
}

type agentOpts struct {
	srcOpts []mtls.SourceOption
	outbox  *Outbox
	files   *mtls.Files
	pods    migrate.PodHost
}

func caller(ctx context.Context) (Caller, error) {
	id, _, err := mtls.PeerIdentity(ctx)
	if err != nil {
		return Caller{}, err
	}
	return Caller{Role: Role(id.Role), Name: id.Name}, nil
}

func startAgent(t testing.TB, p *pki, id mtls.Identity, o agentOpts) *testAgent {
	t.Helper()
	var f mtls.Files
	if o.files != nil {
		f = *o.files
	} else {
		f = p.files(t, id, nil)
	}
	src := newSource(t, f, o.srcOpts...)
	host := newFakeHost(id.Name)
	opts := []ServerOption{
		WithServerCredentials(src.ServerCredentials(mtls.RolePlane, mtls.RoleAgent)),
		WithCaller(caller),
		WithGRPCOptions(grpc.ChainUnaryInterceptor(mtls.UnaryServerInterceptor(src.Source, nil)),
			grpc.ChainStreamInterceptor(mtls.StreamServerInterceptor(src.Source, nil))),
	}
	if o.outbox != nil {
		opts = append(opts, WithOutbox(o.outbox))
	}
	if o.pods != nil {
		opts = append(opts, WithPods(o.pods))
	}
	srv, err := NewServer(host, opts...)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: l}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, cl) }()
	var once sync.Once
	var serveErr error
	a := &testAgent{name: id.Name, addr: l.Addr().String(), files: f, src: src, host: host, outbox: o.outbox, conns: cl, server: srv}
	a.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case serveErr = <-done:
			case <-time.After(30 * time.Second):
				serveErr = errors.New("Serve did not return within 30 s of its context's end")
			}
		})
		return serveErr
	}
	t.Cleanup(func() {
		if err := a.stop(); err != nil {
			t.Errorf("agent %s: %v", id.Name, err)
		}
	})
	return a
}

// dial is a Client of agent a as the plane reaches it (plane/agents.go):
// caller's certificate, expecting the agent's identity, with the mtls
// client interceptors.
func dial(t testing.TB, src *source, a *testAgent, opts ...ClientOption) *Client {
	t.Helper()
	return dialAs(t, src, a.addr, mtls.Identity{Role: mtls.RoleAgent, Name: a.name}, opts...)
}

func dialAs(t testing.TB, src *source, addr string, expect mtls.Identity, opts ...ClientOption) *Client {
	t.Helper()
	c, err := NewClient(expect.Name, addr, append([]ClientOption{
		WithClientCredentials(src.ClientCredentials(expect)),
		WithDialOptions(grpc.WithChainUnaryInterceptor(mtls.UnaryClientInterceptor(src.Source)),
			grpc.WithChainStreamInterceptor(mtls.StreamClientInterceptor(src.Source))),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawConn is a plain gRPC connection with src's credentials expecting
// expect, for calls whose status code or peer the Client hides.
func rawConn(t testing.TB, src *source, addr string, expect mtls.Identity) (*grpc.ClientConn, agentpb.AgentClient) {
	t.Helper()
	// Stamped with request deadlines as the real client's calls are.
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(src.ClientCredentials(expect)),
		grpc.WithUnaryInterceptor(DeadlineClientInterceptor(DefaultRequestDeadline)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, agentpb.NewAgentClient(cc)
}

// serverSerial is the serial of the certificate the server presented to
// the call that filled p.
func serverSerial(p *peer.Peer) string {
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return ""
	}
	return info.State.PeerCertificates[0].SerialNumber.Text(16)
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// call is one call the fake received.
type call struct {
	Method string
	Args   []any
}

// fakeHost is a recording Local: each step records its arguments and
// answers what the test set for it.
type fakeHost struct {
	name string

	mu    sync.Mutex
	calls []call
	ret   map[string]any
	errs  map[string]error
	// block, when set for a method, is waited on (or the call's context)
	// before the step answers.
	block map[string]chan struct{}

	offers map[migrate.Ticket]*fakeOffer
	now    func() time.Time
	// serving counts the ServeOffer calls under way.
	serving atomic.Int64
}

// fakeOffer is what ServeOffer serves for a ticket. Its policy, close to
// migrate/node's: only to the host it was offered to, only until it
// expires, and, as a fake's stricter rule, not again once one transfer
// has served it whole (an interrupted one may start over).
type fakeOffer struct {
	to      string
	data    []byte
	expires time.Time
	served  bool
	// cut, when set, is called once the first attempt has written
	// cutAfter bytes (it may break the connection); the attempt then
	// fails with cutErr if set, else waits for its context to end.
	cutAfter int
	cut      func()
	cutErr   error
	attempts int
	// reusable serves the offer any number of times (benchmarks).
	reusable bool
}

func newFakeHost(name string) *fakeHost {
	return &fakeHost{name: name, ret: map[string]any{}, errs: map[string]error{}, block: map[string]chan struct{}{},
		offers: map[migrate.Ticket]*fakeOffer{}, now: time.Now}
}

func (f *fakeHost) set(method string, ret any, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ret[method], f.errs[method] = ret, err
}

func (f *fakeHost) lastCall() (call, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return call{}, 0
	}
	return f.calls[len(f.calls)-1], len(f.calls)
}

func (f *fakeHost) ncalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeHost) record(ctx context.Context, method string, args ...any) (any, error) {
	f.mu.Lock()
	f.calls = append(f.calls, call{Method: method, Args: args})
	ret, err, block := f.ret[method], f.errs[method], f.block[method]
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fn, ok := ret.(func(args []any) any); ok {
		ret = fn(args)
	}
	return ret, err
}

func as[T any](v any) T {
	t, _ := v.(T)
	return t
}

func (f *fakeHost) Name() string { return f.name }
func (f *fakeHost) Close() error { return nil }

func (f *fakeHost) Hello(ctx context.Context) (migrate.HostInfo, error) {
	r, err := f.record(ctx, "Hello")
	return as[migrate.HostInfo](r), err
}

func (f *fakeHost) Status(ctx context.Context, id string) (migrate.ContainerStatus, error) {
	r, err := f.record(ctx, "Status", id)
	return as[migrate.ContainerStatus](r), err
}

func (f *fakeHost) Start(ctx context.Context, s migrate.Spec, o migrate.StartOptions) (migrate.StepResult, error) {
	r, err := f.record(ctx, "Start", s, o)
	return as[migrate.StepResult](r), err
}

func (f *fakeHost) Restart(ctx context.Context, s migrate.Spec) (migrate.StepResult, error) {
	r, err := f.record(ctx, "Restart", s)
	return as[migrate.StepResult](r), err
}

func (f *fakeHost) Kill(ctx context.Context, id string) (migrate.StepResult, error) {
	r, err := f.record(ctx, "Kill", id)
	return as[migrate.StepResult](r), err
}

func (f *fakeHost) Remove(ctx context.Context, id string) (migrate.StepResult, error) {
	r, err := f.record(ctx, "Remove", id)
	return as[migrate.StepResult](r), err
}

func (f *fakeHost) Checkpoint(ctx context.Context, id string, img migrate.ImageName, o migrate.CheckpointOptions) (migrate.CheckpointResult, error) {
	r, err := f.record(ctx, "Checkpoint", id, img, o)
	return as[migrate.CheckpointResult](r), err
}

func (f *fakeHost) Restore(ctx context.Context, s migrate.Spec, img migrate.ImageName, o migrate.RestoreOptions) (migrate.RestoreResult, error) {
	r, err := f.record(ctx, "Restore", s, img, o)
	return as[migrate.RestoreResult](r), err
}

func (f *fakeHost) Stage(ctx context.Context, s migrate.Spec, img migrate.ImageName, o migrate.StageOptions) (migrate.StepResult, error) {
	r, err := f.record(ctx, "Stage", s, img, o)
	return as[migrate.StepResult](r), err
}

func (f *fakeHost) StartStaged(ctx context.Context, s migrate.Spec, img migrate.ImageName, o migrate.StartStagedOptions) (migrate.RestoreResult, error) {
	r, err := f.record(ctx, "StartStaged", s, img, o)
	return as[migrate.RestoreResult](r), err
}

func (f *fakeHost) VerifyImage(ctx context.Context, img migrate.ImageName) (int64, error) {
	r, err := f.record(ctx, "VerifyImage", img)
	return as[int64](r), err
}

func (f *fakeHost) DropImage(ctx context.Context, img migrate.ImageName) (migrate.StepResult, error) {
	r, err := f.record(ctx, "DropImage", img)
	return as[migrate.StepResult](r), err
}

func (f *fakeHost) EnsureImage(ctx context.Context, ref string, from *migrate.Peer) (migrate.ImageResult, error) {
	r, err := f.record(ctx, "EnsureImage", ref, from)
	return as[migrate.ImageResult](r), err
}

func (f *fakeHost) Offer(ctx context.Context, o migrate.Offer) (migrate.Ticket, error) {
	r, err := f.record(ctx, "Offer", o)
	return as[migrate.Ticket](r), err
}

func (f *fakeHost) Fetch(ctx context.Context, img migrate.ImageName, from migrate.Peer) (migrate.TransferResult, error) {
	r, err := f.record(ctx, "Fetch", img, from)
	return as[migrate.TransferResult](r), err
}

func (f *fakeHost) PrepareNetwork(ctx context.Context, s migrate.Spec, withAddress bool) (migrate.StepResult, error) {
	r, err := f.record(ctx, "PrepareNetwork", s, withAddress)
	return as[migrate.StepResult](r), err
}

func (f *fakeHost) RemoveNetwork(ctx context.Context, id string) (migrate.StepResult, error) {
	r, err := f.record(ctx, "RemoveNetwork", id)
	return as[migrate.StepResult](r), err
}

func (f *fakeHost) ReleaseAddress(ctx context.Context, id string, ip netip.Prefix) (migrate.StepResult, error) {
	r, err := f.record(ctx, "ReleaseAddress", id, ip)
	return as[migrate.StepResult](r), err
}

func (f *fakeHost) ClaimAddress(ctx context.Context, id string, ip netip.Prefix, o migrate.ClaimOptions) (migrate.StepResult, error) {
	r, err := f.record(ctx, "ClaimAddress", id, ip, o)
	return as[migrate.StepResult](r), err
}

func (f *fakeHost) Announce(ctx context.Context, id string, ip netip.Addr, o migrate.AnnounceOptions) (migrate.StepResult, error) {
	r, err := f.record(ctx, "Announce", id, ip, o)
	return as[migrate.StepResult](r), err
}

func (f *fakeHost) Probe(ctx context.Context, ip netip.Addr, ignoreMAC string, d time.Duration) (migrate.ProbeResult, error) {
	r, err := f.record(ctx, "Probe", ip, ignoreMAC, d)
	return as[migrate.ProbeResult](r), err
}

func (f *fakeHost) StartSentry(ctx context.Context, ip netip.Addr, ignoreMAC string, min time.Duration) (migrate.SentryID, error) {
	r, err := f.record(ctx, "StartSentry", ip, ignoreMAC, min)
	return as[migrate.SentryID](r), err
}

func (f *fakeHost) StopSentry(ctx context.Context, id migrate.SentryID) (migrate.ProbeResult, error) {
	r, err := f.record(ctx, "StopSentry", id)
	return as[migrate.ProbeResult](r), err
}

func (f *fakeHost) SetGuards(ctx context.Context, id string, g migrate.Guards, on bool) (migrate.StepResult, error) {
	r, err := f.record(ctx, "SetGuards", id, g, on)
	return as[migrate.StepResult](r), err
}

func (f *fakeHost) NetworkLocks(ctx context.Context, id string, remove bool) ([]string, error) {
	r, err := f.record(ctx, "NetworkLocks", id, remove)
	return as[[]string](r), err
}

func (f *fakeHost) Adoptable(ctx context.Context) ([]migrate.Spec, error) {
	r, err := f.record(ctx, "Adoptable")
	return as[[]migrate.Spec](r), err
}

func (f *fakeHost) Lease(ctx context.Context, id string, l migrate.Lease) (migrate.LeaseState, error) {
	r, err := f.record(ctx, "Lease", id, l)
	return as[migrate.LeaseState](r), err
}

// offer registers what ticket serves, to whom, for how long.
func (f *fakeHost) offer(ticket migrate.Ticket, o *fakeOffer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.offers[ticket] = o
}

func (f *fakeHost) ServeOffer(ctx context.Context, ticket migrate.Ticket, requester string, w io.Writer) error {
	_, _ = f.record(ctx, "ServeOffer", ticket, requester)
	f.serving.Add(1)
	defer f.serving.Add(-1)
	f.mu.Lock()
	o, ok := f.offers[ticket]
	switch {
	case !ok:
		f.mu.Unlock()
		return fmt.Errorf("%w: unknown ticket", migrate.ErrTicket)
	case !f.now().Before(o.expires):
		f.mu.Unlock()
		return fmt.Errorf("%w: ticket expired", migrate.ErrTicket)
	case o.to != requester:
		f.mu.Unlock()
		return fmt.Errorf("%w: ticket offered to another host (asked by %q)", migrate.ErrTicket, requester)
	case o.served:
		f.mu.Unlock()
		return fmt.Errorf("%w: ticket already used", migrate.ErrTicket)
	}
	o.attempts++
	first := o.attempts == 1
	data, cutAfter, cut, cutErr := o.data, o.cutAfter, o.cut, o.cutErr
	f.mu.Unlock()
	r := bytes.NewReader(data)
	buf := make([]byte, 64<<10)
	written := 0
	for {
		if first && cut != nil && written >= cutAfter {
			cut()
			if cutErr != nil {
				return cutErr
			}
			<-ctx.Done()
			return ctx.Err()
		}
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			written += n
		}
		if errors.Is(err, io.EOF) {
			break
		}
	}
	f.mu.Lock()
	o.served = !o.reusable
	f.mu.Unlock()
	return nil
}

var _ Local = (*fakeHost)(nil)
