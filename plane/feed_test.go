package plane

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/sensor/events"
)

// protect records a container on h1 without touching any host.
func protect(t *testing.T, p *Plane, id string) {
	t.Helper()
	if err := p.store.PutContainer(ContainerRecord{Spec: migrate.Spec{ID: id, Args: []string{"x"}}, Host: "h1",
		Policy: DefaultPolicy(), Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

func sensorEvent(typ, mode string, at time.Time) events.Event {
	return events.Event{Schema: events.SchemaVersion, Time: at, Type: typ, Severity: events.SevInfo, Sensor: "s1",
		Container: &events.Container{Identity: "db", ID: "db", Namespace: "escape", Host: "h1", CgroupID: 7},
		Epoch:     &events.Epoch{Seq: 1, Start: at.Add(-time.Second), Calls: 1000, Mode: mode, Threshold: 10}}
}

func TestSensorFeedTurnsEpochsIntoReports(t *testing.T) {
	p, _ := offlinePlane(t)
	protect(t, p, "db")
	ctx := context.Background()
	now := time.Now()
	handle := func(ev events.Event) Decision {
		t.Helper()
		d, err := p.HandleSensorEvent(ctx, ev, "test")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	epoch := func() EpochRecord {
		e, err := p.store.Epoch("db")
		if err != nil {
			t.Fatal(err)
		}
		return e
	}

	// Learning epochs are not yet verified: they do not count as clean.
	if d := handle(sensorEvent(events.TypeEpoch, "learning", now)); !strings.Contains(d.Reasons[0], "learning") {
		t.Fatalf("learning epoch: %+v", d)
	}
	if e := epoch(); e.CleanStreak != 0 || e.LastEpoch != 1 {
		t.Fatalf("after a learning epoch: %+v", e)
	}
	// The plane numbers the reports itself: kernel sequence numbers start
	// again with every restored copy.
	for range 3 {
		handle(sensorEvent(events.TypeEpoch, "detecting", now))
	}
	if e := epoch(); e.CleanStreak != 3 || e.LastEpoch != 4 || e.LastClean != 4 {
		t.Fatalf("after three clean epochs: %+v", e)
	}
	degraded := sensorEvent(events.TypeEpoch, "detecting", now)
	degraded.Epoch.Degraded = true
	if d := handle(degraded); d.Action != "none" || !strings.Contains(d.Reasons[0], "degraded") {
		t.Fatalf("degraded: %+v", d)
	}
	if e := epoch(); e.CleanStreak != 0 || e.LastEpoch != 5 {
		t.Fatalf("a degraded epoch must break the clean streak: %+v", e)
	}

	// Events that cannot speak for the current copy are set aside.
	elsewhere := sensorEvent(events.TypeAnomaly, "detecting", now)
	elsewhere.Container.Host = "h2"
	final := sensorEvent(events.TypeAnomaly, "detecting", now)
	final.Epoch.Final = true
	p.newCopy("db", now.Add(time.Minute))
	before := sensorEvent(events.TypeAnomaly, "detecting", now)
	for name, ev := range map[string]events.Event{"other host": elsewhere, "final epoch": final, "before the copy": before} {
		d := handle(ev)
		if d.Action != "none" || !strings.HasPrefix(d.Reasons[0], "ignored:") {
			t.Errorf("%s: %+v", name, d)
		}
	}
	if e := epoch(); e.LastEpoch != 5 || e.LastAnomaly != 0 {
		t.Fatalf("ignored events changed the record: %+v", e)
	}

	// The first epoch (kernel seq 0) of a copy the plane started is set
	// aside: it holds the end of the restore.
	first := sensorEvent(events.TypeAnomaly, "detecting", now.Add(90*time.Second))
	first.Epoch.Seq = 0
	if d := handle(first); !strings.Contains(strings.Join(d.Reasons, " "), "first epoch of a copy") {
		t.Fatalf("first epoch of a restored copy: %+v", d)
	}

	// An epoch that overlaps the plane's own checkpoint is set aside; one
	// after it is not.
	later := now.Add(2 * time.Minute)
	p.feed.note("db", later.Add(-3*time.Second), later.Add(-2*time.Second))
	overlapping := sensorEvent(events.TypeAnomaly, "detecting", later.Add(-time.Second))
	overlapping.Epoch.Start = later.Add(-2500 * time.Millisecond)
	if d := handle(overlapping); !strings.Contains(strings.Join(d.Reasons, " "), "own checkpoint") {
		t.Fatalf("overlapping epoch: %+v", d)
	}
	clean := sensorEvent(events.TypeEpoch, "detecting", later)
	clean.Epoch.Start = later.Add(-time.Second)
	if d := handle(clean); d.Reasons[0] != "clean epoch" {
		t.Fatalf("epoch after the checkpoint: %+v", d)
	}
	// An epoch the sensor marked is set aside even where the plane's own
	// record shows no action (a checkpoint the plane's clock placed
	// elsewhere, or one made through the agent directly).
	marked := sensorEvent(events.TypeAnomaly, "detecting", later.Add(500*time.Millisecond))
	marked.Epoch.Start = later
	marked.Intervention = &events.Intervention{Kind: "checkpoint", By: "agent"}
	if d := handle(marked); !strings.Contains(strings.Join(d.Reasons, " "), "marked by the sensor") ||
		!strings.Contains(strings.Join(d.Reasons, " "), "agent's checkpoint") {
		t.Fatalf("marked epoch: %+v", d)
	}

	// An anomaly with no checkpoint to roll back to: the decision says so,
	// and the audit records the outcome actually returned.
	anomaly := sensorEvent(events.TypeAnomaly, "detecting", later.Add(time.Second))
	anomaly.Epoch.Start = later
	anomaly.Epoch.Mismatches = 40
	d := handle(anomaly)
	if d.Action != "rollback" || d.Outcome != "failed" || !strings.Contains(d.Error, "checkpoint") {
		t.Fatalf("anomaly without a checkpoint: %+v", d)
	}
	m := NewMetrics(p)
	if got := counterValue(t, m.decisions.WithLabelValues("rollback", "failed")); got != 1 {
		t.Errorf("decisions_total{rollback,failed} = %v, want 1 (the audit must carry the outcome)", got)
	}
	if got := counterValue(t, m.reports.WithLabelValues("ignored")); got != 6 {
		t.Errorf("reports_total{ignored} = %v, want 6", got)
	}

	// A container the plane does not protect.
	stranger := sensorEvent(events.TypeEpoch, "detecting", now)
	stranger.Container.Identity, stranger.Container.ID = "nobody", "nobody"
	if _, err := p.HandleSensorEvent(ctx, stranger, "test"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown container: %v", err)
	}
}

func TestSensorEventsRejectGarbage(t *testing.T) {
	good := sensorEvent(events.TypeEpoch, "detecting", time.Now())
	if err := ValidateSensorEvent(good); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*events.Event){
		"schema":       func(e *events.Event) { e.Schema = 99 },
		"no type":      func(e *events.Event) { e.Type = "" },
		"no time":      func(e *events.Event) { e.Time = time.Time{} },
		"no container": func(e *events.Event) { e.Container = nil },
		"no identity":  func(e *events.Event) { e.Container = &events.Container{} },
		"no epoch":     func(e *events.Event) { e.Epoch = nil },
		"unnamed intervention": func(e *events.Event) {
			e.Intervention = &events.Intervention{By: "agent"}
		},
		"huge intervention": func(e *events.Event) {
			e.Intervention = &events.Intervention{Kind: strings.Repeat("x", 1000), By: "agent"}
		},
	} {
		ev := good
		c := *good.Container
		ev.Container = &c
		mod(&ev)
		if err := ValidateSensorEvent(ev); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSensorEventsOverTheAPI(t *testing.T) {
	p, cfg := offlinePlane(t)
	protect(t, p, "db")
	serveAPI(t, p, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	c := NewClient(cfg.Socket)
	var out map[string]any
	if err := c.Do(ctx, "POST", "/v1/events", sensorEvent(events.TypeEpoch, "detecting", time.Now()), &out); err != nil {
		t.Fatal(err)
	}
	if out["queued"] != true {
		t.Fatalf("answer %v", out)
	}
	bad := sensorEvent(events.TypeEpoch, "detecting", time.Now())
	bad.Schema = 2
	if err := c.Do(ctx, "POST", "/v1/events", bad, &out); err == nil || !strings.Contains(err.Error(), "schema") {
		t.Fatalf("bad schema: %v", err)
	}
	if err := c.Do(ctx, "POST", "/v1/events", map[string]any{"schema": 1, "surprise": true}, &out); err == nil {
		t.Fatal("unknown field accepted")
	}
	// The queued event is handled by Run's feed.
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		e, err := p.store.Epoch("db")
		if err != nil {
			t.Fatal(err)
		}
		if e.LastEpoch == 1 && e.CleanStreak == 1 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the feed did not handle the event: %+v", e)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// A copy the plane restored settles for RestoreSettle: an anomaly made only
// of calls the workload makes is set aside then, one with a novel call is
// acted on at once, and after the settle time every anomaly is acted on.
func TestSettlingCopySetsAsideKnownCallAnomalies(t *testing.T) {
	p, _ := offlinePlane(t)
	protect(t, p, "db")
	ctx := context.Background()
	restored := time.Now()
	p.newCopy("db", restored)
	anomaly := func(after time.Duration, unseen ...events.Syscall) events.Event {
		ev := sensorEvent(events.TypeAnomaly, "detecting", restored.Add(after))
		ev.Epoch.Start = restored.Add(after - 20*time.Millisecond)
		ev.Epoch.Mismatches, ev.Epoch.Unseen = 17, unseen
		return ev
	}
	known := []events.Syscall{{Name: "read", Nr: 0, Windows: 17}, {Name: "accept4", Nr: 288, Windows: 1}}
	novel := append([]events.Syscall{{Name: "execve", Nr: 59, Windows: 10, Novel: true}}, known...)
	for _, tc := range []struct {
		name   string
		ev     events.Event
		ignore bool
	}{
		{"known calls while settling", anomaly(2*time.Second, known...), true},
		{"a novel call while settling", anomaly(2*time.Second, novel...), false},
		{"no evidence while settling", anomaly(2 * time.Second), false},
		{"known calls after settling", anomaly(6*time.Second, known...), false},
	} {
		d, err := p.HandleSensorEvent(ctx, tc.ev, "test")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		ignored := d.Action == "none" && strings.Contains(strings.Join(d.Reasons, " "), "settling for 5s")
		if ignored != tc.ignore {
			t.Errorf("%s: %+v; want ignored %v", tc.name, d, tc.ignore)
		}
		if !tc.ignore && d.Action != "rollback" {
			t.Errorf("%s: action %q, want rollback", tc.name, d.Action)
		}
	}

	// Off: every anomaly counts.
	c, err := p.store.Container("db")
	if err != nil {
		t.Fatal(err)
	}
	c.Policy.RestoreSettle = 0
	if err := p.store.PutContainer(c); err != nil {
		t.Fatal(err)
	}
	if d, err := p.HandleSensorEvent(ctx, anomaly(2*time.Second, known...), "test"); err != nil || d.Action != "rollback" {
		t.Errorf("restore_settle 0: %+v %v", d, err)
	}

	long := anomaly(time.Second, make([]events.Syscall, maxEvidence+1)...)
	if _, err := p.HandleSensorEvent(ctx, long, "test"); err == nil || !strings.Contains(err.Error(), "epoch.unseen") {
		t.Errorf("an evidence list of %d calls: %v", maxEvidence+1, err)
	}
	for name, bad := range map[string]events.Syscall{
		"no name":   {Nr: 1, Windows: 1},
		"long name": {Name: strings.Repeat("x", maxCallName+1), Nr: 1, Windows: 1},
	} {
		if _, err := p.HandleSensorEvent(ctx, anomaly(time.Second, bad), "test"); err == nil || !strings.Contains(err.Error(), "epoch.unseen[0]: name") {
			t.Errorf("evidence with %s: %v", name, err)
		}
	}
}
