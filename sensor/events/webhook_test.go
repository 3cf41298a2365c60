package events_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/escape-mtd/escape/sensor/events"
)

// fastRetry keeps the tests' back-off short.
var fastRetry = events.WithRetry(3, 10*time.Millisecond, 20*time.Millisecond)

// caFileOf writes the test server's certificate as a PEM CA file.
func caFileOf(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "siem-ca.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// receiver is a SIEM stand-in: it records what it was sent.
type receiver struct {
	calls  atomic.Int32
	got    chan received
	status int
}

type received struct {
	event  events.Event
	header http.Header
}

func newReceiver() *receiver { return &receiver{got: make(chan received, 16), status: http.StatusOK} }

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.calls.Add(1)
	b, _ := io.ReadAll(req.Body)
	var e events.Event
	if err := json.Unmarshal(b, &e); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.got <- received{e, req.Header.Clone()}
	w.WriteHeader(r.status)
}

func (r *receiver) next(t *testing.T) received {
	t.Helper()
	select {
	case g := <-r.got:
		return g
	case <-time.After(5 * time.Second):
		t.Fatal("nothing delivered in 5s")
		return received{}
	}
}

func TestWebhookTLSWithItsOwnCA(t *testing.T) {
	rcv := newReceiver()
	srv := httptest.NewTLSServer(rcv)
	defer srv.Close()
	s, err := events.NewWebhookSink(srv.URL, events.WithCAFile(caFileOf(t, srv)), fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	s.Emit(context.Background(), ev(11))
	if g := rcv.next(t); g.event.Epoch.Seq != 11 {
		t.Errorf("delivered %+v", g.event)
	}
	s.Close()
	if s.Sent.Load() != 1 || s.Dropped.Load() != 0 {
		t.Errorf("sent %d dropped %d", s.Sent.Load(), s.Dropped.Load())
	}

	// Without the CA the server's certificate is unknown: nothing is sent.
	core, logs := observer.New(zap.WarnLevel)
	s, err = events.NewWebhookSink(srv.URL, fastRetry, events.WithWebhookLogger(zap.New(core)))
	if err != nil {
		t.Fatal(err)
	}
	before := rcv.calls.Load()
	s.Emit(context.Background(), ev(12))
	s.Close()
	if rcv.calls.Load() != before || s.Dropped.Load() != 1 {
		t.Errorf("untrusted certificate: %d requests reached the server, %d dropped", rcv.calls.Load()-before, s.Dropped.Load())
	}
	if l := logs.FilterMessage("webhook gave up on an event").All(); len(l) != 1 || !strings.Contains(l[0].ContextMap()["error"].(string), "certificate") {
		t.Errorf("give-up log: %+v", l)
	}

	for _, bad := range []string{filepath.Join(t.TempDir(), "absent.pem"), writeFile(t, "not a certificate\n")} {
		if _, err := events.NewWebhookSink(srv.URL, events.WithCAFile(bad)); err == nil {
			t.Errorf("CA file %s accepted", bad)
		}
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestWebhookRefusesPlainHTTPUnlessAllowed(t *testing.T) {
	rcv := newReceiver()
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	_, err := events.NewWebhookSink(srv.URL)
	if !errors.Is(err, events.ErrPlainHTTP) {
		t.Fatalf("plain http without allowing it: %v", err)
	}
	if _, err := events.CheckWebhookURL(srv.URL, false); err == nil {
		t.Error("CheckWebhookURL accepted plain http")
	}
	s, err := events.NewWebhookSink(srv.URL, events.WithInsecureHTTP(), fastRetry)
	if err != nil {
		t.Fatal(err)
	}
	s.Emit(context.Background(), ev(1))
	rcv.next(t)
	s.Close()
	// Credentials in the URL are refused, and not repeated in the error.
	_, err = events.NewWebhookSink("https://siem:hunter2@siem.example/x")
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "auth header file") {
		t.Errorf("URL with credentials: %v", err)
	}
}

func TestWebhookDoesNotFollowRedirects(t *testing.T) {
	target := newReceiver()
	dst := httptest.NewTLSServer(target)
	defer dst.Close()
	var redirects atomic.Int32
	src := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirects.Add(1)
		http.Redirect(w, r, dst.URL+"/elsewhere", http.StatusTemporaryRedirect)
	}))
	src.TLS = dst.TLS
	src.StartTLS()
	defer src.Close()
	core, logs := observer.New(zap.WarnLevel)
	s, err := events.NewWebhookSink(src.URL, events.WithCAFile(caFileOf(t, src)), fastRetry,
		events.WithWebhookLogger(zap.New(core)))
	if err != nil {
		t.Fatal(err)
	}
	s.Emit(context.Background(), ev(2))
	s.Emit(context.Background(), ev(3))
	s.Close()
	if redirects.Load() != 2 || target.calls.Load() != 0 || s.Dropped.Load() != 2 || s.Sent.Load() != 0 {
		t.Errorf("redirect: %d asked, %d followed, %d dropped, %d sent; want 2 (once each, not retried), 0, 2, 0",
			redirects.Load(), target.calls.Load(), s.Dropped.Load(), s.Sent.Load())
	}
	l := logs.FilterMessage("webhook gave up on an event").All()
	if len(l) != 2 || l[0].ContextMap()["attempts"] != int64(1) || !strings.Contains(l[0].ContextMap()["error"].(string), "307") {
		t.Errorf("redirect logs: %+v", l)
	}
}

// A header file, replaced as a Secret rotation does it (a rename over the
// old file), is used from the next event on; a broken replacement keeps
// the last good header; no log line holds a secret.
func TestWebhookAuthHeaderFromFileRotates(t *testing.T) {
	const first, second, broken = "tok-first-0123456789", "tok-second-9876543210", "tok-broken-55555 with spaces"
	var want atomic.Value
	want.Store("Bearer " + first)
	rcv := newReceiver()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != want.Load().(string) {
			rcv.calls.Add(1)
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		rcv.ServeHTTP(w, r)
	}))
	defer srv.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "auth")
	replace := func(content string) {
		tmp := filepath.Join(dir, ".auth.new")
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	replace(first + "\n")
	core, logs := observer.New(zap.DebugLevel)
	s, err := events.NewWebhookSink(srv.URL, events.WithCAFile(caFileOf(t, srv)), events.WithAuthHeaderFile(path),
		fastRetry, events.WithWebhookLogger(zap.New(core)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Emit(context.Background(), ev(1))
	if g := rcv.next(t); g.header.Get("Authorization") != "Bearer "+first {
		t.Errorf("first header %q", g.header.Get("Authorization"))
	}

	want.Store("Bearer " + second)
	replace(second)
	s.Emit(context.Background(), ev(2))
	if g := rcv.next(t); g.event.Epoch.Seq != 2 {
		t.Errorf("after rotation: %+v", g.event)
	}

	// The header form, another header name.
	want.Store("Bearer " + second) // the receiver checks Authorization only
	replace(broken)
	s.Emit(context.Background(), ev(3))
	if g := rcv.next(t); g.header.Get("Authorization") != "Bearer "+second {
		t.Errorf("after a broken rotation the last good header is kept: got %q", g.header.Get("Authorization"))
	}
	if l := logs.FilterMessage("webhook auth header file changed and cannot be used").All(); len(l) != 1 {
		t.Errorf("broken rotation logged %d times, want once", len(l))
	}
	replace("Authorization: Basic " + first + "=\n")
	want.Store("Basic " + first + "=")
	s.Emit(context.Background(), ev(4))
	if g := rcv.next(t); g.event.Epoch.Seq != 4 {
		t.Errorf("header form: %+v", g.event)
	}
	if n := rcv.calls.Load(); n != 4 {
		t.Errorf("%d requests, want 4: none refused", n)
	}
	for _, e := range logs.All() {
		line := e.Message + " " + strings.Join(slicesOf(e.ContextMap()), " ")
		for _, secret := range []string{first, second, "tok-broken"} {
			if strings.Contains(line, secret) {
				t.Errorf("a log line holds a secret: %s", line)
			}
		}
	}

	// A daemon does not start with an auth file it cannot use.
	for _, content := range []string{"", "a\nb", "user:password", "Content-Type: text/plain", "Authorization: \x01"} {
		if _, err := events.NewWebhookSink(srv.URL, events.WithAuthHeaderFile(writeFile(t, content))); err == nil {
			t.Errorf("auth file %q accepted", content)
		} else if len(content) > 4 && strings.Contains(err.Error(), content) {
			t.Errorf("error quotes the file: %v", err)
		}
	}
	if _, err := events.NewWebhookSink(srv.URL, events.WithAuthHeaderFile(filepath.Join(dir, "absent"))); err == nil {
		t.Error("absent auth file accepted")
	}
}

func slicesOf(m map[string]any) []string {
	var out []string
	for k, v := range m {
		b, _ := json.Marshal(v)
		out = append(out, k+"="+string(b))
	}
	return out
}

func TestWebhookSendsOnlyAllowedLabels(t *testing.T) {
	labels := map[string]string{events.IdentityLabel: "web", "escape.mtd/protect": "true", "escape.mtd/rollbacks": "2",
		"io.kubernetes.pod.name": "web-0", "io.kubernetes.pod.namespace": "shop", "db-password-hint": "secret"}
	for _, tc := range []struct {
		name string
		opts []events.WebhookOption
		want []string
	}{
		{"default", nil, []string{events.IdentityLabel, "escape.mtd/protect", "escape.mtd/rollbacks"}},
		{"pods", []events.WebhookOption{events.WithLabels([]string{"io.kubernetes.pod.*", events.IdentityLabel})},
			[]string{events.IdentityLabel, "io.kubernetes.pod.name", "io.kubernetes.pod.namespace"}},
		{"none", []events.WebhookOption{events.WithLabels(nil)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rcv := newReceiver()
			srv := httptest.NewTLSServer(rcv)
			defer srv.Close()
			s, err := events.NewWebhookSink(srv.URL, append(tc.opts, events.WithCAFile(caFileOf(t, srv)), fastRetry)...)
			if err != nil {
				t.Fatal(err)
			}
			e := ev(5)
			e.Container.Labels = maps.Clone(labels)
			s.Emit(context.Background(), e)
			g := rcv.next(t)
			s.Close()
			var got []string
			for k := range g.event.Container.Labels {
				got = append(got, k)
			}
			if !sameSet(got, tc.want) {
				t.Errorf("labels sent %v, want %v", got, tc.want)
			}
			if g.event.Container.ID != "c" || g.event.Epoch.Seq != 5 {
				t.Errorf("the rest of the event changed: %+v", g.event)
			}
			if !maps.Equal(e.Container.Labels, labels) {
				t.Errorf("the caller's event was changed: %v", e.Container.Labels)
			}
		})
	}
	for _, bad := range []string{"", "*x", "a*b*", " escape.identity"} {
		if _, err := events.NewLabelFilter([]string{bad}); err == nil {
			t.Errorf("label pattern %q accepted", bad)
		}
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		if !m[x] {
			return false
		}
	}
	return true
}

func TestParseAuthHeaderForms(t *testing.T) {
	for in, want := range map[string]events.AuthHeader{
		"abc.DEF-123_~+/==\n":               {Name: "Authorization", Value: "Bearer abc.DEF-123_~+/=="},
		"Authorization: Bearer xyz":         {Name: "Authorization", Value: "Bearer xyz"},
		"  x-api-key:\t0123  \n":            {Name: "X-Api-Key", Value: "0123"},
		"authorization: Basic dXNlcjpwdw==": {Name: "Authorization", Value: "Basic dXNlcjpwdw=="},
	} {
		got, err := events.ParseAuthHeader([]byte(in))
		if err != nil || got != want {
			t.Errorf("ParseAuthHeader(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", " \n", "two\nlines", "user:pass", "Basic abc", "Host: x", "Name : v", "Name: ", "==", "X: a\x7fb"} {
		if h, err := events.ParseAuthHeader([]byte(in)); err == nil {
			t.Errorf("ParseAuthHeader(%q) accepted: %+v", in, h)
		}
	}
}

// Whatever the file holds, a header that is accepted is one line that
// parses back to itself, and a refusal does not quote the file.
func FuzzParseAuthHeader(f *testing.F) {
	for _, s := range []string{"tok", "Authorization: Bearer x", "X-Key:\tv", "a:b", "user:pass\n", "Host: h", "\x00", "Name: a\r\nEvil: b"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := events.ParseAuthHeader(data)
		if err != nil {
			s := strings.TrimSpace(string(data))
			if len(s) >= 24 && strings.Contains(err.Error(), s) {
				t.Fatalf("error quotes the content: %v", err)
			}
			return
		}
		if h.Name == "" || h.Value == "" || strings.ContainsAny(h.Name+h.Value, "\r\n\x00") {
			t.Fatalf("accepted a broken header %+v", h)
		}
		back, err := events.ParseAuthHeader([]byte(h.Name + ": " + h.Value))
		if err != nil || back != h {
			t.Fatalf("%+v does not parse back: %+v, %v", h, back, err)
		}
	})
}
