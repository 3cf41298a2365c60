package discovery_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"go.uber.org/zap/zaptest"

	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/discovery"
	"github.com/escape-mtd/escape/sensor/events"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// memSink keeps events in memory.
type memSink struct {
	mu sync.Mutex
	ev []events.Event
}

func (m *memSink) Emit(_ context.Context, e events.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ev = append(m.ev, e)
	return nil
}
func (m *memSink) Close() error { return nil }
func (m *memSink) find(typ, id string, after int) (events.Event, int, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := after; i < len(m.ev); i++ {
		if e := m.ev[i]; e.Type == typ && e.Container != nil && e.Container.ID == id {
			return e, i, true
		}
	}
	return events.Event{}, 0, false
}

// daemon is one sensor instance over every lab host.
type daemon struct {
	mon    *sensor.Monitor
	sink   *memSink
	cancel func()
	wg     sync.WaitGroup
}

func startDaemon(t *testing.T, inv *lab.Inventory, profiles string) *daemon {
	t.Helper()
	var eps []discovery.Endpoint
	for _, h := range inv.Hosts {
		eps = append(eps, discovery.Endpoint{Host: h.Name, Address: h.Containerd, Namespace: inv.Namespace, Own: true})
	}
	return startWatchers(t, profiles, eps...)
}

// startWatchers runs one sensor over the endpoints given, a watcher each.
func startWatchers(t *testing.T, profiles string, eps ...discovery.Endpoint) *daemon {
	t.Helper()
	log := zaptest.NewLogger(t)
	p, err := sensor.LoadProbe(sensor.WithEpoch(200), sensor.WithFlush(500*time.Millisecond), sensor.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{sink: &memSink{}}
	d.mon, err = sensor.NewMonitor(p, d.sink, sensor.WithLearnEpochs(2), sensor.WithProfileDir(profiles),
		sensor.WithMonitorLogger(log), sensor.WithEpochEvents(true))
	if err != nil {
		t.Fatal(err)
	}
	root, err := sensor.UnifiedRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.wg.Add(1)
	go func() { defer d.wg.Done(); _ = d.mon.Run(ctx) }()
	for _, ep := range eps {
		w, err := discovery.NewWatcher(ep, root, d.mon, log)
		if err != nil {
			t.Fatal(err)
		}
		d.wg.Add(1)
		go func() { defer d.wg.Done(); _ = w.Run(ctx) }()
	}
	d.cancel = func() {
		cancel()
		d.wg.Wait()
		p.Close()
	}
	t.Cleanup(d.stop)
	return d
}

func (d *daemon) stop() {
	if d.cancel != nil {
		d.cancel()
		d.cancel = nil
	}
}

func (d *daemon) wait(t *testing.T, typ, id string, after int) (events.Event, int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if e, i, ok := d.sink.find(typ, id, after); ok {
			return e, i
		}
	}
	t.Fatalf("no %s event for %s within 30s", typ, id)
	return events.Event{}, 0
}

// Containers on a lab host are found by the start-up scan and by events,
// mapped to their cgroup; a restarted daemon picks up the running container;
// a checkpointed and restored container (new cgroup id) keeps its identity
// and learned profile.
func TestLabDiscoveryRestartRestore(t *testing.T) {
	inv := labtest.Ensure(t)
	host := inv.Hosts[len(inv.Hosts)-1]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	profiles := t.TempDir()

	d1 := startDaemon(t, inv, profiles)
	time.Sleep(300 * time.Millisecond) // let the scan finish: the container must come through events
	cli, err := client.New(host.Containerd)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	nctx := namespaces.WithNamespace(ctx, inv.Namespace)
	id := "sensor-disc-test"
	if old, err := cli.LoadContainer(nctx, id); err == nil {
		if task, err := old.Task(nctx, nil); err == nil {
			task.Delete(nctx, client.WithProcessKill)
		}
		old.Delete(nctx, client.WithSnapshotCleanup)
	}
	img, err := cli.GetImage(nctx, inv.Images["busybox"].Ref)
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := cli.NewContainer(nctx, id, client.WithNewSnapshot(id+"-snap", img),
		client.WithContainerLabels(map[string]string{"app": "loop"}),
		// No oci.WithImageConfig: it mounts the image's snapshot in this
		// process, and the snapshots exist only inside the host's mount
		// namespace.
		client.WithNewSpec(oci.WithEnv([]string{"PATH=/bin:/usr/bin"}), oci.WithCgroup(inv.CgroupsPath(host.Name, id)),
			oci.WithProcessArgs("/bin/sh", "-c", `while true; do echo x > /tmp/f; cat /tmp/f > /dev/null; usleep 2000; done`)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cctx := namespaces.WithNamespace(context.Background(), inv.Namespace)
		if task, err := ctr.Task(cctx, nil); err == nil {
			task.Delete(cctx, client.WithProcessKill)
		}
		ctr.Delete(cctx, client.WithSnapshotCleanup)
	}()
	task, err := ctr.NewTask(nctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(nctx); err != nil {
		t.Fatal(err)
	}
	root, _ := sensor.UnifiedRoot()
	cgid, err := sensor.CgroupID(filepath.Join(root, inv.CgroupsPath(host.Name, id)))
	if err != nil {
		t.Fatal(err)
	}
	w, _ := d1.wait(t, events.TypeWatched, id, 0)
	c := w.Container
	if c.CgroupID != cgid || c.Host != host.Name || c.Namespace != inv.Namespace || c.Labels["app"] != "loop" ||
		c.Image != inv.Images["busybox"].Ref || c.Identity != inv.Namespace+"/"+id {
		t.Fatalf("watched %+v, want cgroup %d on %s", c, cgid, host.Name)
	}
	// Learning (2 epochs) then detecting.
	d1.waitMode(t, id, "detecting")
	d1.stop()

	// Restart: the scan finds the running container; its profile came back
	// from the profile directory, so it detects at once.
	d2 := startDaemon(t, inv, profiles)
	w2, i := d2.wait(t, events.TypeWatched, id, 0)
	if w2.Container.CgroupID != cgid {
		t.Fatalf("after restart watched cgroup %d, want %d", w2.Container.CgroupID, cgid)
	}
	e, _ := d2.wait(t, events.TypeEpoch, id, i)
	if e.Epoch.Mode != "detecting" {
		t.Fatalf("restarted daemon's first epoch is %s: profile not kept", e.Epoch.Mode)
	}

	// Checkpoint and restore: a new cgroup id, same identity and profile.
	dir := filepath.Join(inv.Shared, "checkpoints", "sensor-test", id)
	os.RemoveAll(dir)
	defer os.RemoveAll(filepath.Dir(dir))
	if _, err := task.Checkpoint(nctx, client.WithCheckpointImagePath(dir), func(ci *client.CheckpointTaskInfo) error {
		ci.Options.(*options.CheckpointOptions).Exit = true
		return nil
	}); err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	_, j := d2.wait(t, events.TypeUnwatched, id, i)
	if _, err := task.Delete(nctx); err != nil {
		t.Fatal(err)
	}
	restored, err := ctr.NewTask(nctx, cio.NullIO, client.WithRestoreImagePath(dir))
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if err := restored.Start(nctx); err != nil {
		t.Fatal(err)
	}
	w3, k := d2.wait(t, events.TypeWatched, id, j)
	if w3.Container.CgroupID == cgid || w3.Container.Identity != c.Identity {
		t.Fatalf("restored container watched as %+v (old cgroup %d)", w3.Container, cgid)
	}
	e3, _ := d2.wait(t, events.TypeEpoch, id, k)
	if e3.Epoch.Mode != "detecting" || e3.Epoch.Database == 0 {
		t.Fatalf("restored container's epoch %+v: profile lost", e3.Epoch)
	}
	if _, err := restored.Delete(nctx, client.WithProcessKill); err != nil {
		t.Fatal(err)
	}
	d2.wait(t, events.TypeUnwatched, id, k)
}

func (d *daemon) waitMode(t *testing.T, id, mode string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		d.sink.mu.Lock()
		for _, e := range d.sink.ev {
			if e.Epoch != nil && e.Container.ID == id && e.Epoch.Mode == mode {
				d.sink.mu.Unlock()
				return
			}
		}
		d.sink.mu.Unlock()
	}
	t.Fatalf("%s never reached mode %s", id, mode)
}
