package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/escape-mtd/escape/sensor/events"
)

// fakePlane collects what the sensor posts to the plane's socket.
type fakePlane struct {
	mu  sync.Mutex
	evs []events.Event
}

func (f *fakePlane) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/events" {
		http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
		return
	}
	var ev events.Event
	if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.evs = append(f.evs, ev)
	f.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

func (f *fakePlane) epochs() []events.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []events.Event
	for _, e := range f.evs {
		if e.Epoch != nil {
			out = append(out, e)
		}
	}
	return out
}

// The daemon as an operator starts it: a configuration file, a flag that
// overrides it, and every scored epoch reported to the plane even though
// epoch events for the SIEM are off.
func TestDaemonReportsEveryEpochToThePlane(t *testing.T) {
	dir := busyCgroup(t)
	tmp := t.TempDir()
	sock := filepath.Join(tmp, "plane.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	plane := &fakePlane{}
	srv := &http.Server{Handler: plane, ReadHeaderTimeout: time.Second}
	go srv.Serve(l) //nolint:errcheck
	t.Cleanup(func() { srv.Close() })

	evFile := filepath.Join(tmp, "events.jsonl")
	cfg := filepath.Join(tmp, "escape.yaml")
	port := 20000 + (os.Getpid()+7)%20000
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
sensor:
  epoch: 500
  flush: 1s
  max_containers: 8
  ring_size: 1048576
  learn_epochs: 2
  epoch_events: false
  profiles: ""
  events: ["file:%s"]
  listen: 127.0.0.1:%d
  control: %s
  cgroups: [%s]
  host: test
  plane: /nonexistent/overridden/by/the/flag.sock
plane:
  socket: /run/whatever.sock   # the plane's section: not the sensor's business
`, evFile, port, filepath.Join(tmp, "ctl.sock"), dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := newRunCmd()
	cmd.SetContext(ctx)
	cmd.SetArgs([]string{"--config", cfg, "--plane", sock})
	done := make(chan error, 1)
	go func() { done <- cmd.Execute() }()
	waitUntil(t, func() bool { return len(plane.epochs()) >= 4 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("daemon: %v", err)
	}
	modes := map[string]int{}
	for _, e := range plane.epochs() {
		if e.Container == nil || !strings.HasPrefix(e.Container.Identity, "cgroup/") || e.Sensor != "test" {
			t.Fatalf("event names %+v", e.Container)
		}
		if e.Epoch.Start.IsZero() || e.Epoch.Start.After(e.Time) {
			t.Errorf("epoch start %v, event time %v", e.Epoch.Start, e.Time)
		}
		modes[e.Epoch.Mode]++
	}
	if modes["learning"] != 2 || modes["detecting"] < 1 {
		t.Errorf("modes reported to the plane: %v (want the 2 learning epochs, then detecting ones)", modes)
	}
	// The SIEM file got no epoch summaries: epoch_events is off there.
	b, err := os.ReadFile(evFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"type":"epoch"`) {
		t.Error("epoch events reached the file sink with epoch_events: false")
	}
}

func TestRunConfigFileErrorsNameTheKey(t *testing.T) {
	tmp := t.TempDir()
	for doc, want := range map[string]string{
		"sensor:\n  windw: 3\n":          "windw",
		"sensor:\n  window: 40\n":        "window (--window): 40 is outside 1..16",
		"sensor:\n  flush: soon\n":       "sensor.flush",
		"sensor:\n  learn_for: -1s\n":    "learn_for (--learn-for): -1s is outside 0..720h",
		"sensor:\n  ring_size: 5000\n":   "ring_size",
		"sensor:\n  plane: relative\n":   "plane (--plane)",
		"sensors:\n  window: 3\n":        "sensors",
		"sensor:\n  listen: 0.0.0.0:1\n": "loopback",
		"sensor:\n  control: ctl.sock\n": "control (--control)",
		"sensor:\n  profiles: p\n":       "profiles (--profiles)",
		"sensor:\n  namespace: \"\"\n":   "namespace (--namespace)",
	} {
		path := filepath.Join(tmp, "c.yaml")
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := newRunCmd()
		cmd.SetArgs([]string{"--config", path})
		cmd.SetOut(&strings.Builder{})
		cmd.SetErr(&strings.Builder{})
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error naming %q", doc, err, want)
		}
	}
}
