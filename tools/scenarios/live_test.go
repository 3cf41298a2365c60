package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/internal/modroot"
	"go.uber.org/zap/zaptest"
)

// TestMain lets the test binary serve as the runner's enter helper.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "enter" {
		if err := enterMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "enter:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// TestLiveScenario runs webapp-revshell for real: the notes app in its own
// netns and cgroup, escape-sensor record (BPF) over an 80 s normal phase and
// the reverse shell injected through the app, then the offline replay. The
// recording must parse and the expected scorer must catch the shell within
// the scenario's latency.
func TestLiveScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a live scenario needs root, BPF and about 100 s")
	}
	root, err := modroot.Find()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "escape-sensor")
	build := exec.Command("go", "build", "-o", bin, "./cmd/escape-sensor")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build escape-sensor: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	scs, err := LoadScenarios(".", []string{"webapp-revshell"})
	if err != nil {
		t.Fatal(err)
	}
	s := scs[0]
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := LiveConfig{Root: ".", Out: out, Sensor: bin, Self: self, Normal: 80 * time.Second, Post: 3 * time.Second,
		Log: zaptest.NewLogger(t)}
	o, err := runScenario(ctx, s, cfg, false)
	if err != nil {
		logs, _ := os.ReadFile(filepath.Join(out, s.Name+".log"))
		t.Fatalf("scenario: %v\nlog:\n%s", err, logs)
	}
	if o.AttackExit != "0" {
		t.Errorf("the attack script failed (%s): the reverse shell did not run", o.AttackExit)
	}
	shell, _ := os.ReadFile(filepath.Join(out, s.Name+".attacker", "revshell.out"))
	if !strings.Contains(string(shell), "uid=65534") {
		t.Errorf("the reverse shell's output lacks the service user's id:\n%s", shell)
	}
	rec, err := ReadRecording(ctx, o.Recording)
	if err != nil {
		t.Fatalf("the recording does not parse: %v", err)
	}
	if rec.Meta.ContainerID != s.Name || len(rec.Calls) < 10_000 || rec.TS[0] > o.AttackStart || rec.TS[len(rec.TS)-1] < o.AttackStart {
		t.Fatalf("recording: %d calls, meta %+v, spanning %d..%d, attack at %d", len(rec.Calls), rec.Meta, rec.TS[0], rec.TS[len(rec.TS)-1], o.AttackStart)
	}
	r, ok := o.Replay.Result(s.Expect.Scorer)
	if !ok {
		t.Fatalf("no %s result", s.Expect.Scorer)
	}
	t.Logf("%s: %+v over %v of normal test load; replay %+v", s.Expect.Scorer, r, o.Replay.TestSpan, *o.Replay)
	if !r.Detected || r.Latency > time.Duration(s.Expect.Within) {
		t.Errorf("%s: detected %v after %v: want within %v", s.Expect.Scorer, r.Detected, r.Latency, time.Duration(s.Expect.Within))
	}
}
