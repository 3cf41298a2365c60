package plane

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

// offlinePlane is a plane whose hosts have no containerd: enough for the
// API, policy and store logic that must never reach a host.
func offlinePlane(t *testing.T) (*Plane, Config) {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Socket = filepath.Join(dir, "run", "plane.sock")
	cfg.State = filepath.Join(dir, "state.db")
	cfg.Audit = filepath.Join(dir, "audit.jsonl")
	cfg.ServiceRange, cfg.ServicePrefix = "198.18.1.0/24", 15
	for _, n := range []string{"h1", "h2"} {
		cfg.Hosts = append(cfg.Hosts, HostConfig{Name: n, Agent: "127.0.0.1:1", Labels: map[string]string{"datacenter": n}})
	}
	p, err := New(cfg, WithLogger(zaptest.NewLogger(t)),
		WithHostLinks(func(h HostConfig) (migrate.Host, error) { return offlineHost{name: h.Name}, nil }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, cfg
}

func serveAPI(t *testing.T, p *Plane, cfg Config) {
	t.Helper()
	l, err := Listen(cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewAPI(p).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
}

// dialAs connects to a unix socket from an OS thread running as uid, so
// the kernel's SO_PEERCRED reports that uid. The thread is discarded.
func dialAs(uid int, path string) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), 0); e != 0 {
			ch <- res{nil, e}
			return
		}
		c, err := net.Dial("unix", path)
		ch <- res{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func TestAPIRefusesUnauthenticatedPeers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root")
	}
	p, cfg := offlinePlane(t)
	serveAPI(t, p, cfg)
	fi, err := os.Stat(cfg.Socket)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v", fi.Mode(), err)
	}
	// Layer 1: the file permissions keep other users out entirely.
	if _, err := dialAs(65534, cfg.Socket); !errors.Is(err, syscall.EACCES) {
		t.Fatalf("uid 65534 dialled the 0600 socket: %v", err)
	}
	// Layer 2: even with the permissions opened up, SO_PEERCRED refuses.
	for d := filepath.Dir(cfg.Socket); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	os.Chmod(cfg.Socket, 0o666)
	nobody := &Client{at: cfg.Socket, base: "http://plane", hc: &http.Client{Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return dialAs(65534, cfg.Socket) }}}}
	err = nobody.Do(context.Background(), "POST", "/v1/flag", HostRequest{Host: "h1", Compromised: ptr(true)}, nil)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("unauthenticated request: %v", err)
	}
	if h, _ := p.store.Host("h1"); h.Compromised {
		t.Fatal("unauthenticated request changed a host flag")
	}
	evs, err := ReadAudit(cfg.Audit)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) == 0 || evs[len(evs)-1].Kind != "auth" || !strings.Contains(evs[len(evs)-1].Actor, "uid=65534") {
		t.Fatalf("refusal not audited: %+v", evs)
	}
	// Root gets through.
	cl := NewClient(cfg.Socket)
	var hr HostRecord
	if err := cl.Do(context.Background(), "POST", "/v1/flag", HostRequest{Host: "h1", Compromised: ptr(true), Reason: "test"}, &hr); err != nil {
		t.Fatal(err)
	}
	if !hr.Compromised {
		t.Fatal("flag not applied")
	}
}

func TestAPIAnswersGarbageWithClearErrors(t *testing.T) {
	p, cfg := offlinePlane(t)
	serveAPI(t, p, cfg)
	if err := p.store.PutContainer(ContainerRecord{Spec: testSpec("db"), Host: "h1", Policy: DefaultPolicy()}); err != nil {
		t.Fatal(err)
	}
	cl := NewClient(cfg.Socket)
	ctx := context.Background()
	raw := func(method, route, body string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, method, "http://plane"+route, strings.NewReader(body))
		resp, err := cl.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b := make([]byte, 4096)
		n, _ := resp.Body.Read(b)
		return resp.StatusCode, string(b[:n])
	}
	for _, tc := range []struct {
		method, route, body string
		code                int
		want                string
	}{
		{"POST", "/v1/reports", `{"container":"db","epoch":1,"anomalous":false,"bogus":1}`, 400, "unknown field"},
		{"POST", "/v1/reports", `{"container":"db","epoch":1}{}`, 400, "trailing data"},
		{"POST", "/v1/reports", `{"container":"db","epoch":0}`, 400, "epoch"},
		{"POST", "/v1/reports", `{"container":"../etc","epoch":1}`, 400, "invalid container id"},
		{"POST", "/v1/reports", `not json`, 400, "bad request body"},
		{"POST", "/v1/reports", `{"container":"ghost","epoch":1}`, 404, "not found"},
		{"POST", "/v1/reports", `{"container":"db","epoch":5}`, 200, `"action":"none"`},
		{"POST", "/v1/reports", `{"container":"db","epoch":5}`, 409, "stale report"},
		{"POST", "/v1/checkpoint", `{"container":"db"}`, 409, "recent epochs not clean"},
		{"POST", "/v1/rollback", `{"container":"db"}`, 409, "no verified safe checkpoint"},
		{"POST", "/v1/flag", `{"host":"h9","compromised":true}`, 400, "unknown host"},
		{"POST", "/v1/flag", `{"host":"h1"}`, 400, "compromised: required"},
		{"POST", "/v1/migrate", `{"container":"db","to":"h1"}`, 409, "not an eligible destination"},
		{"GET", "/v1/nothing", ``, 404, ""},
		{"POST", "/v1/reports", `{"container":"db","epoch":6,"detail":"` + strings.Repeat("x", 5000) + `"}`, 400, "detail"},
		{"POST", "/v1/reports", `{"container":"db","epoch":6,"scorer":"lm","score":-1}`, 400, "must be finite and not negative"},
		{"POST", "/v1/reports", `{"container":"db","epoch":6,"scorer":"` + strings.Repeat("x", 17) + `"}`, 400, "scorer: longer than 16"},
		{"POST", "/v1/reports", strings.Repeat(" ", maxBody+10) + "{}", 400, "too large"},
	} {
		code, body := raw(tc.method, tc.route, tc.body)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s %s %.60q: %d %q; want %d containing %q", tc.method, tc.route, tc.body, code, body, tc.code, tc.want)
		}
	}
	// An anomaly with no checkpoint: the decision is rollback, which fails
	// and says why; nothing else happens.
	var d Decision
	if err := cl.Do(ctx, "POST", "/v1/reports", Report{Container: "db", Epoch: 7, Anomalous: true, Mismatches: 9, Threshold: 3,
		Scorer: "lm", Score: 8.91, Limit: 0.941}, &d); err != nil {
		t.Fatal(err)
	}
	if d.Action != "rollback" || d.Outcome != "failed" || !strings.Contains(d.Error, "no verified safe checkpoint") {
		t.Fatalf("decision %+v", d)
	}
	// The reason is in the scorer's own terms, not the papers' T.
	if len(d.Reasons) == 0 || !strings.Contains(d.Reasons[0], "anomalous epoch 7 (lm score 8.91 > threshold 0.941; 9 mismatching windows)") {
		t.Fatalf("reasons %q: want the lm score against its threshold", d.Reasons)
	}
	// With every other host flagged, migration has no destination.
	if _, err := p.Flag("h2", true, "test", "t"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.chooseDest("h1"); err == nil {
		t.Fatal("a destination was chosen with every other host flagged")
	}
}
