package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/escape-mtd/escape/sensor/events"
)

func writeSensorConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "escape.yaml")
	if err := os.WriteFile(path, []byte("sensor:\n"+body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A plain http target is refused when the configuration is loaded, with
// the key that allows it named; the other webhook keys are checked there
// too.
func TestWebhookConfigRefusesWhatItShould(t *testing.T) {
	for body, want := range map[string]string{
		"  events: [\"http://siem.example/x\"]\n":                                      "webhook_allow_insecure_http",
		"  events: [\"https://u:p@siem.example/x\"]\n":                                 "auth header file",
		"  webhook_auth_header_file: auth\n":                                           "webhook_auth_header_file (--webhook-auth-header-file): \"auth\" must be an absolute path",
		"  webhook_ca_file: ca.pem\n":                                                  "webhook_ca_file",
		"  webhook_labels: [\"a*b*\"]\n":                                               "webhook_labels",
		"  webhook_allow_insecure_http: maybe\n":                                       "webhook_allow_insecure_http",
		"  events: [\"https://siem.example/x\"]\n  webhook_allow_insecure_htp: true\n": "webhook_allow_insecure_htp",
	} {
		_, _, err := loadSensor(t, nil, writeSensorConfig(t, body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want an error naming %s", body, err, want)
		}
	}
	got, _, err := loadSensor(t, nil, writeSensorConfig(t, "  events: [\"http://siem.example/x\"]\n  webhook_allow_insecure_http: true\n  webhook_labels: []\n"))
	if err != nil {
		t.Fatalf("plain http, allowed: %v", err)
	}
	if !got.WebhookAllowInsecureHTTP || len(got.WebhookLabels) != 0 {
		t.Errorf("loaded %+v", got)
	}
	// The flag refuses the same way.
	if _, _, err := loadSensor(t, []string{"--events", "http://siem.example/x"}, ""); err == nil || !strings.Contains(err.Error(), "plain http") {
		t.Errorf("--events http://...: %v", err)
	}
	def, _, err := loadSensor(t, nil, "")
	if err != nil || strings.Join(def.WebhookLabels, ",") != strings.Join(events.DefaultWebhookLabels, ",") {
		t.Errorf("default labels %v (%v), want %v", def.WebhookLabels, err, events.DefaultWebhookLabels)
	}
}

// The keys reach the sink the daemon opens: a real TLS server with its own
// CA, an auth header from a file, and only the labels named.
func TestWebhookConfigReachesTheSink(t *testing.T) {
	got := make(chan *http.Request, 1)
	bodies := make(chan events.Event, 1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e events.Event
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &e); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- r
		bodies <- e
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca, auth := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "auth")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(auth, []byte("X-Siem-Key: k-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _, err := loadSensor(t, nil, writeSensorConfig(t, "  events: [\""+srv.URL+"/ingest\"]\n  webhook_ca_file: "+ca+
		"\n  webhook_auth_header_file: "+auth+"\n  webhook_labels: [app]\n"))
	if err != nil {
		t.Fatal(err)
	}
	sinks, err := c.openSinks(io.Discard, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	e := events.Event{Schema: events.SchemaVersion, Time: time.Now(), Type: events.TypeAnomaly, Sensor: "h1",
		Container: &events.Container{ID: "c", Labels: map[string]string{"app": "web", events.IdentityLabel: "web", "team": "x"}}}
	if err := sinks.Emit(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.Header.Get("X-Siem-Key") != "k-0123" || r.URL.Path != "/ingest" {
			t.Errorf("request %s with header %q", r.URL.Path, r.Header.Get("X-Siem-Key"))
		}
		if b := <-bodies; len(b.Container.Labels) != 1 || b.Container.Labels["app"] != "web" {
			t.Errorf("labels sent: %v, want app only", b.Container.Labels)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing delivered")
	}
	sinks.Close()
}

// Whatever the targets and keys, validation never panics, and a plain
// http target passes only when allowed.
func FuzzWebhookConfig(f *testing.F) {
	f.Add("https://siem.example/x", false, "escape.mtd/*", "/etc/escape/auth")
	f.Add("http://siem.example/x", true, "", "")
	f.Add("http://siem.example/x", false, "*", "rel")
	f.Add("https://a:b@c/", false, "a*b", "/x")
	f.Fuzz(func(t *testing.T, target string, allow bool, label, authFile string) {
		c := runConfig{Window: 10, Epoch: 1000, MaxContainers: 8, RingSize: 1 << 20, LearnEpochs: 1, Threshold: 10,
			Events: []string{target}, EventsMaxSize: 1 << 20, EventsKeep: 1, Control: "/run/x.sock", Namespace: "escape",
			WebhookAllowInsecureHTTP: allow, WebhookLabels: []string{label}, WebhookAuthHeaderFile: authFile}
		err := c.validateWebhook()
		if err == nil && strings.HasPrefix(target, "http://") && !allow {
			t.Fatalf("plain http %q accepted without allow_insecure_http", target)
		}
	})
}
