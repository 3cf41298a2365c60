package sensor_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/internal/intervene"
	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/control"
	"github.com/escape-mtd/escape/sensor/events"
	"github.com/escape-mtd/escape/sensor/internal/cgtest"
	"github.com/escape-mtd/escape/sensor/top"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) events(t *testing.T) []events.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []events.Event
	sc := bufio.NewScanner(bytes.NewReader(s.b.Bytes()))
	for sc.Scan() {
		var e events.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("event line %q: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

// Learn a workload, then change its behaviour: the monitor trains, switches
// to detection, raises an anomaly event, and top, the control socket and the
// metrics all show it.
func TestMonitorLearnsThenDetects(t *testing.T) {
	cgtest.Root(t)
	log := zaptest.NewLogger(t)
	ctx, mon, p, out := startMonitor(t, sensor.WithLearnEpochs(3), sensor.WithProfileDir(t.TempDir()))
	cg := cgtest.New(t)
	ctr := sensor.Container{ID: "c1", Namespace: "test", Host: "h0", Image: "busybox", CgroupPath: cg.Leaf,
		Labels: map[string]string{"app": "demo"}}
	if err := mon.Add(ctx, ctr); err != nil {
		t.Fatal(err)
	}
	cg.Run(t, known, 60)                                      // 541 calls: 5 epochs, 3 train, 2 detect clean
	cg.Run(t, []int{1000, 24, 2000, 39, 3000, 186, 4000}, 30) // new behaviour

	sock := filepath.Join(t.TempDir(), "ctl", "sensor.sock")
	srv, err := control.Listen(sock, mon, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx) //nolint:errcheck
	waitFor(t, func() bool {
		for _, e := range out.events(t) {
			if e.Type == events.TypeAnomaly {
				return true
			}
		}
		return false
	})
	cli, err := control.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Do(ctx, control.Request{Op: "rows"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Rows) != 1 || resp.Rows[0].Identity != "test/c1" || resp.Rows[0].State != sensor.StateAnomalous {
		t.Fatalf("rows %+v", resp.Rows)
	}
	if resp.Rows[0].Stats.Calls < 540 || resp.Rows[0].Database == 0 {
		t.Errorf("row counters %+v", resp.Rows[0])
	}
	if _, err := cli.Do(ctx, control.Request{Op: "explode"}); err == nil || !strings.Contains(err.Error(), "unknown op") {
		t.Errorf("unknown op answered %v", err)
	}
	frame := top.NewView(top.ByMism).Render("test", time.Now(), resp.Rows, 80)
	for _, l := range strings.Split(strings.TrimRight(frame, "\n"), "\n") {
		if len(l) > 79 {
			t.Errorf("top line of %d columns: %q", len(l), l)
		}
	}
	if !strings.Contains(frame, "test/c1") || !strings.Contains(frame, "anomalous") {
		t.Errorf("top frame:\n%s", frame)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(sensor.NewMetrics(mon, p.Programs()))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	if got["escape_sensor_anomalous_epochs_total"] < 1 || got["escape_sensor_syscalls_total"] < 540 ||
		got["escape_sensor_watched_containers"] != 1 {
		t.Errorf("metrics %v", got)
	}
	progs := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "escape_sensor_bpf_run_count_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				progs[l.GetValue()] = true
			}
		}
	}
	for _, name := range []string{"escape_enter", "escape_fork", "escape_attach", "escape_rmdir", "remark_task"} {
		if !progs[name] {
			t.Errorf("no BPF run statistics for %s (have %v)", name, progs)
		}
	}

	if err := mon.Remove(ctx, cg.LeafID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		ev := out.events(t)
		return ev[len(ev)-1].Type == events.TypeUnwatched
	})
	var train, detect, anomalies int
	for _, e := range out.events(t) {
		if e.Schema != events.SchemaVersion || e.Container == nil || e.Container.Identity != "test/c1" {
			t.Fatalf("event %+v", e)
		}
		if e.Epoch != nil && e.Epoch.Mode == sensor.StateLearning {
			train++
		}
		if e.Epoch != nil && e.Epoch.Mode == "detecting" {
			detect++
		}
		if e.Type == events.TypeAnomaly {
			anomalies++
			if e.Epoch.Mismatches <= 10 {
				t.Errorf("anomaly with %d mismatches", e.Epoch.Mismatches)
			}
			checkEvidence(t, e.Epoch.Unseen)
		}
	}
	if train != 3 || detect < 2 || anomalies < 1 {
		t.Errorf("%d training, %d detection epochs, %d anomalies", train, detect, anomalies)
	}
}

// checkEvidence checks an anomaly's evidence against the new behaviour of
// TestMonitorLearnsThenDetects. The numbers 1000-4000, which no kernel has,
// reach the profile as bags.Unknown: it is the novel call, listed first, with
// the exit_group that ends each child (the training child's exit fell in no
// learned window). The learned calls (the known stream) may appear only as
// known calls in a new mix.
func checkEvidence(t *testing.T, unseen []events.Syscall) {
	t.Helper()
	novel := map[uint16]string{bags.Unknown: "unknown", 231: "exit_group"}
	learned := map[uint16]string{24: "sched_yield", 39: "getpid", 102: "getuid", 104: "getgid", 107: "geteuid",
		108: "getegid", 110: "getppid", 111: "getpgrp", 186: "gettid"}
	if len(unseen) == 0 || unseen[0].Nr != bags.Unknown || !unseen[0].Novel {
		t.Fatalf("anomaly evidence %+v: want the unknown calls first, as novel", unseen)
	}
	for i, u := range unseen {
		want, isNovel := novel[u.Nr]
		if !isNovel {
			want = learned[u.Nr]
		}
		if u.Name != want || u.Novel != isNovel || u.Windows == 0 {
			t.Errorf("evidence %d: %+v; want name %q, novel %v", i, u, want, isNovel)
		}
		if i > 0 && u.Novel && !unseen[i-1].Novel {
			t.Errorf("novel call %+v after a known one", u)
		}
	}
}

// startMonitor runs a monitor over a probe of W=10, E=100 with threshold 10
// and every epoch's event sent to out, until the test ends.
func startMonitor(t *testing.T, opts ...sensor.MonitorOption) (context.Context, *sensor.Monitor, *sensor.Probe, *syncBuf) {
	t.Helper()
	return startMonitorWith(t, append([]sensor.MonitorOption{sensor.WithThreshold(10)}, opts...)...)
}

// startMonitorWith is startMonitor without its fixed threshold of 10.
func startMonitorWith(t *testing.T, opts ...sensor.MonitorOption) (context.Context, *sensor.Monitor, *sensor.Probe, *syncBuf) {
	t.Helper()
	log := zaptest.NewLogger(t)
	p, err := sensor.LoadProbe(sensor.WithWindow(10), sensor.WithEpoch(100), sensor.WithFlush(0), sensor.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	out := &syncBuf{}
	opts = append([]sensor.MonitorOption{sensor.WithHost("test"), sensor.WithEpochEvents(true),
		sensor.WithMonitorLogger(log)}, opts...)
	mon, err := sensor.NewMonitor(p, events.NewStreamSink(out), opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mon.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ctx, mon, p, out
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 10s")
}

// An epoch that overlaps one of the agent's interventions carries the mark:
// its anomaly is still emitted, as a warning, counted apart from the
// anomalies; once the intervention and its settle margin are over, the same
// behaviour is a critical, unmarked anomaly again.
func TestMonitorMarksInterventions(t *testing.T) {
	cgtest.Root(t)
	ivs := intervene.NewLog(50 * time.Millisecond)
	ctx, mon, p, out := startMonitor(t, sensor.WithLearnEpochs(3), sensor.WithInterventions(ivs))
	cg := cgtest.New(t)
	ctr := sensor.Container{ID: "c1", Namespace: "test", Host: "h0", CgroupPath: cg.Leaf}
	if err := mon.Add(ctx, ctr); err != nil {
		t.Fatal(err)
	}
	cg.Run(t, known, 60) // learn, then clean detection
	waitFor(t, func() bool { return len(out.events(t)) >= 5 })
	before := len(out.events(t))

	end := ivs.Begin("c1", intervene.Checkpoint)
	cg.Run(t, []int{1000, 24, 2000, 39, 3000, 186, 4000}, 30) // what CRIU's parasite would look like
	waitFor(t, func() bool { return len(out.events(t)) > before+1 })
	end()
	time.Sleep(300 * time.Millisecond) // past the settle margin
	cg.Run(t, []int{1000, 24, 2000, 39, 3000, 186, 4000}, 60)
	waitFor(t, func() bool {
		for _, e := range out.events(t) {
			if e.Type == events.TypeAnomaly && e.Intervention == nil {
				return true
			}
		}
		return false
	})

	var marked, markedAnomalies, unmarkedAnomalies int
	for _, e := range out.events(t)[before:] {
		if e.Epoch == nil {
			continue
		}
		if e.Intervention != nil {
			marked++
			if *e.Intervention != (events.Intervention{Kind: intervene.Checkpoint, By: intervene.ByAgent}) {
				t.Errorf("mark %+v", *e.Intervention)
			}
		}
		switch {
		case e.Type == events.TypeAnomaly && e.Intervention != nil:
			markedAnomalies++
			if e.Severity != events.SevWarning || len(e.Epoch.Unseen) == 0 || !strings.Contains(e.Message, "checkpoint") {
				t.Errorf("marked anomaly %+v", e)
			}
		case e.Type == events.TypeAnomaly:
			unmarkedAnomalies++
			if e.Severity != events.SevCritical {
				t.Errorf("unmarked anomaly of severity %s", e.Severity)
			}
		}
	}
	if markedAnomalies == 0 || unmarkedAnomalies == 0 {
		t.Fatalf("%d marked epochs, %d marked anomalies, %d unmarked anomalies: want both kinds", marked, markedAnomalies, unmarkedAnomalies)
	}
	rows := mon.Rows()
	if len(rows) != 1 || rows[0].Stats.Intervened != uint64(marked) || rows[0].Stats.IntervenedAnomalies != uint64(markedAnomalies) ||
		rows[0].Stats.Anomalies != uint64(unmarkedAnomalies) {
		t.Errorf("stats %+v; events: %d marked, %d marked anomalies, %d anomalies", rows[0].Stats, marked, markedAnomalies, unmarkedAnomalies)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(sensor.NewMetrics(mon, p.Programs()))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] += m.GetCounter().GetValue()
		}
	}
	if got["escape_sensor_intervention_epochs_total"] != float64(marked) ||
		got["escape_sensor_intervention_anomalies_total"] != float64(markedAnomalies) {
		t.Errorf("metrics %v", got)
	}
}
