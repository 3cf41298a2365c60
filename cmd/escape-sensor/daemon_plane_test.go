package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/escape-mtd/escape/sensor/events"
)

// The daemon as an operator starts it: a configuration file with every
// daemon's section, and a flag that overrides it. (Scored epochs reach the
// plane through the agent's outbox, agentapi.Outbox, once an agent section
// with listen is present; the sensor no longer posts to a plane socket.)
func TestDaemonConfigFileAndFlagOverride(t *testing.T) {
	dir := busyCgroup(t)
	tmp := t.TempDir()
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
  threshold: 10   # an explicit threshold: no calibration, learning ends after learn_epochs
  epoch_events: false
  profiles: ""
  events: ["file:%s"]
  listen: 127.0.0.1:%d
  control: %s
  containerd: ""
  cgroups: [%s]
  host: test
agent:
  bridge: br-unused   # no listen: the agent is off, detection only
plane:
  socket: /run/whatever.sock   # the plane's section: not the sensor's business
`, evFile, port, filepath.Join(tmp, "ctl.sock"), dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := newRunCmd()
	cmd.SetContext(ctx)
	// The flag wins over epoch_events: false in the file. The daemon runs
	// inside the test process: it must not drop the capabilities the
	// other tests of this binary need (the lab's nsenter).
	cmd.SetArgs([]string{"--config", cfg, "--epoch-events", "--drop-capabilities=false"})
	done := make(chan error, 1)
	go func() { done <- cmd.Execute() }()
	epochs := func() []events.Event {
		b, _ := os.ReadFile(evFile)
		var out []events.Event
		for _, line := range strings.Split(string(b), "\n") {
			var e events.Event
			if json.Unmarshal([]byte(line), &e) == nil && e.Epoch != nil {
				out = append(out, e)
			}
		}
		return out
	}
	waitUntil(t, func() bool {
		select {
		case err := <-done:
			t.Fatalf("daemon ended early: %v", err)
		default:
		}
		return len(epochs()) >= 4
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("daemon: %v", err)
	}
	modes := map[string]int{}
	for _, e := range epochs() {
		if e.Container == nil || !strings.HasPrefix(e.Container.Identity, "cgroup/") || e.Sensor != "test" {
			t.Fatalf("event names %+v (sensor %q)", e.Container, e.Sensor)
		}
		if e.Epoch.Start.IsZero() || e.Epoch.Start.After(e.Time) {
			t.Errorf("epoch start %v, event time %v", e.Epoch.Start, e.Time)
		}
		modes[e.Epoch.Mode]++
	}
	if modes["learning"] != 2 || modes["detecting"] < 1 {
		t.Errorf("epoch modes: %v (want the 2 learning epochs, then detecting ones)", modes)
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
		"sensor:\n  containerd: rel\n":   "containerd (--containerd)",
		"sensor:\n  plane: /x.sock\n":    "field plane not found",
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
