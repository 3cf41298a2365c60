package main

import (
	"bytes"
	"context"
	"fmt"
	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/sensor/control"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/escape-mtd/escape/sensor"
)

// busyCgroup makes a cgroup2 directory running a busy shell loop.
func busyCgroup(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("daemon test: needs root (BPF, cgroups)")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skip("daemon test: no kernel BTF")
	}
	root, err := sensor.UnifiedRoot()
	if err != nil {
		t.Skip("daemon test: no cgroup2 mount")
	}
	dir := filepath.Join(root, fmt.Sprintf("escape-dtest-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	cmd := exec.Command("/bin/sh", "-c", "while :; do cat /proc/self/stat > /dev/null; done")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd()), Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
		cmd.Wait()
		for i := 0; i < 100 && os.Remove(dir) != nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
	})
	return dir
}

// The daemon end to end, with the defaults' scoring (lm, calibrated):
// events to a rotated file, /healthz and /metrics on loopback, top
// rendering its rows through the control socket, and retrain.
func TestDaemonRunServesEventsMetricsAndTop(t *testing.T) {
	dir := busyCgroup(t)
	tmp := t.TempDir()
	evFile := filepath.Join(tmp, "events.jsonl")
	port := 20000 + os.Getpid()%20000
	c := &runConfig{Window: 10, Epoch: 500, Flush: time.Second, MaxContainers: 8, RingSize: 1 << 20,
		LearnEpochs: 2, FalseAlarmsPerDay: 1, LearnMax: time.Minute, EpochEvents: true, Profiles: filepath.Join(tmp, "profiles"),
		Events: []string{"file:" + evFile}, EventsMaxSize: 1 << 20, EventsKeep: 2,
		Listen: fmt.Sprintf("127.0.0.1:%d", port), Control: filepath.Join(tmp, "run", "ctl.sock"),
		Cgroups: []string{dir}, Host: "test", Namespace: "escape"}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runDaemon(ctx, c, defaultAgentConfig(), io.Discard) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	}()
	waitUntil(t, func() bool {
		b, _ := os.ReadFile(evFile)
		return bytes.Contains(b, []byte(`"type":"watched"`)) && bytes.Count(b, []byte(`"type":"epoch"`)) >= 3
	})
	get := func(path string) string {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s %s", path, resp.Status, b)
		}
		return string(b)
	}
	if h := get("/healthz"); !strings.HasPrefix(h, "ok 1 watched") {
		t.Errorf("healthz %q", h)
	}
	m := get("/metrics")
	for _, want := range []string{"escape_sensor_syscalls_total{", "escape_sensor_epochs_total{",
		`escape_sensor_bpf_run_count_total{program="escape_enter"}`, "escape_sensor_profile_bags{",
		"escape_sensor_drops_total{", "escape_sensor_watched_containers 1"} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	var out bytes.Buffer
	if err := runTop(ctx, c.Control, 'r', true, 300*time.Millisecond, 80, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 3 || !strings.Contains(lines[2], "cgroup/") {
		t.Fatalf("top:\n%s", out.String())
	}
	for _, l := range lines {
		if len(l) > 79 {
			t.Errorf("top line of %d columns", len(l))
		}
	}
	f := strings.Fields(lines[2])
	if f[2] != sensor.StateLearning && f[2] != sensor.StateWatching && f[2] != sensor.StateAnomalous {
		t.Errorf("top state %q in %q", f[2], lines[2])
	}
	if f[3] == "0" {
		t.Errorf("top shows no call rate for a busy container: %q", lines[2])
	}
	b, _ := os.ReadFile(evFile)
	if !bytes.Contains(b, []byte(`"scorer":"lm"`)) {
		t.Error("the default scorer is not lm in the events")
	}

	// retrain IDENTITY through the daemon's control socket.
	cli, err := control.Dial(ctx, c.Control)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Do(ctx, control.Request{Op: "rows"})
	if err != nil || len(resp.Rows) != 1 {
		t.Fatalf("rows %+v: %v", resp.Rows, err)
	}
	id := resp.Rows[0].Identity
	out.Reset()
	if err := runRetrain(ctx, c.Control, id, &out); err != nil || !strings.Contains(out.String(), id) {
		t.Fatalf("retrain %s: %v, %q", id, err, out.String())
	}
	if resp, err := cli.Do(ctx, control.Request{Op: "rows"}); err != nil || resp.Rows[0].State != sensor.StateLearning ||
		resp.Rows[0].Learned > 1 {
		t.Errorf("after retrain: %+v %v", resp.Rows, err)
	}
	if err := runRetrain(ctx, c.Control, "cgroup/nobody", &out); err == nil || !strings.Contains(err.Error(), "unknown identity") {
		t.Errorf("retrain of an unknown identity: %v", err)
	}
}

func TestRunConfigRejectsGarbage(t *testing.T) {
	base := runConfig{Window: 10, Epoch: 1000, MaxContainers: 8, RingSize: 1 << 20, LearnEpochs: 1, Threshold: 10,
		FalseAlarmsPerDay: 1, LearnMax: time.Minute, Events: []string{"stdout"}, EventsMaxSize: 1 << 20, EventsKeep: 1, Listen: "127.0.0.1:9464",
		Control: "/run/escape-sensor/control.sock", Namespace: "escape"}
	if err := base.validate(); err != nil {
		t.Fatalf("the valid base is refused: %v", err)
	}
	for _, mod := range []func(*runConfig){
		func(c *runConfig) { c.Listen = "0.0.0.0:9464" },
		func(c *runConfig) { c.Listen = "example.com:80" },
		func(c *runConfig) { c.Listen = "garbage" },
		func(c *runConfig) { c.Threshold = -1 },
		func(c *runConfig) { c.Scorer = "stide" },
		func(c *runConfig) { c.FalseAlarmsPerDay = 0 },
		func(c *runConfig) { c.LearnFor, c.LearnMax = time.Hour, time.Minute },
		func(c *runConfig) { c.Events = nil },
		func(c *runConfig) { c.Containerd = "h1.sock" },
		func(c *runConfig) { c.Window = 17 },
		func(c *runConfig) { c.Epoch = 5 },
		func(c *runConfig) { c.RingSize = 3 << 20 },
		func(c *runConfig) { c.Flush = -time.Second },
		func(c *runConfig) { c.LearnQuarantine = -time.Second },
		func(c *runConfig) { c.LearnRate = -1 },
		func(c *runConfig) { c.LearnRate = math.NaN() },
		func(c *runConfig) { c.LearnQueue = -1 },
		func(c *runConfig) { c.LearnQueue = bags.MaxQuarantineQueue + 1 },
	} {
		c := base
		mod(&c)
		if err := c.validate(); err == nil {
			t.Errorf("accepted %+v", c)
		}
	}
	// The default rule: lm, except that a threshold alone keeps meaning T.
	for _, r := range []struct {
		scorer    string
		threshold float64
		want      string
	}{{"", 0, bags.RuleLM}, {"", 20, bags.RuleBoSC}, {"LM", 20, bags.RuleLM}, {"bosc", 0, bags.RuleBoSC}} {
		c := base
		c.Scorer, c.Threshold = r.scorer, r.threshold
		if err := c.validate(); err != nil || c.rule() != r.want {
			t.Errorf("scorer %q threshold %v: rule %s (%v), want %s", r.scorer, r.threshold, c.rule(), err, r.want)
		}
	}
	c := base
	c.Events = []string{"gopher://x"}
	if _, err := c.openSinks(io.Discard, nil); err == nil {
		t.Error("bad sink accepted")
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 20s")
}
