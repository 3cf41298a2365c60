package sensor_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/escape-mtd/escape/sensor"
	"github.com/escape-mtd/escape/sensor/events"
	"github.com/escape-mtd/escape/sensor/internal/cgtest"
)

// The kubelet's two cgroup layouts, made for real in this host's cgroup2
// hierarchy (there is no systemd here: the test creates what systemd would,
// kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
// cri-containerd-<id>.scope), each with a real process in it: the spec's
// cgroupsPath of either driver resolves to the directory the kernel
// reports for the process, the BPF sensor counts that process's calls for
// that container and no other, and a process outside both is not counted.
func TestKubeletCgroupLayoutsOnRealCgroups(t *testing.T) {
	root := cgtest.Root(t)
	u := cgtest.RandomHex(16)
	uid := fmt.Sprintf("%s-%s-%s-%s-%s", u[:8], u[8:12], u[12:16], u[16:20], u[20:])
	escaped := strings.ReplaceAll(uid, "-", "_")
	sdID, fsID := cgtest.RandomHex(32), cgtest.RandomHex(32)

	// systemd driver: what containerd's CRI writes into the spec, and the
	// directories systemd would make for it.
	sdPath := "kubepods-burstable-pod" + escaped + ".slice:cri-containerd:" + sdID
	sdDir := cgtest.Tree(t, root, "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"+escaped+
		".slice/cri-containerd-"+sdID+".scope")
	// cgroupfs driver.
	fsPath := "/kubepods/burstable/pod" + uid + "/" + fsID
	fsDir := cgtest.Tree(t, root, fsPath)
	bystander := cgtest.Domain(t)

	for path, want := range map[string]string{sdPath: sdDir, fsPath: fsDir} {
		got, err := sensor.CgroupDir(root, path)
		if err != nil || got != want {
			t.Fatalf("cgroups path %q resolved to %q (%v), want %s", path, got, err, want)
		}
	}
	sdProc, fsProc, byProc := cgtest.Spin(t, sdDir, 1), cgtest.Spin(t, fsDir, 1), cgtest.Spin(t, bystander, 1)
	// The task's pid gives the same directory: the kernel's own view.
	for proc, want := range map[*os.Process]string{sdProc.Process: sdDir, fsProc.Process: fsDir} {
		if got, err := sensor.CgroupDirOfPID(root, proc.Pid); err != nil || got != want {
			t.Fatalf("pid %d: cgroup %q (%v), want %s", proc.Pid, got, err, want)
		}
	}

	ctx, mon, p, out := startMonitor(t, sensor.WithLearnEpochs(1))
	pod := &sensor.Pod{Namespace: "shop", Name: "web-7d9c-x2k4q", UID: uid, Container: "nginx", Owner: "deployment/web"}
	for id, dir := range map[string]string{sdID: sdDir, fsID: fsDir} {
		// An image's escape.identity label, copied onto a CRI
		// container: ignored and counted, the workload stays the key.
		if err := mon.Add(ctx, sensor.Container{ID: id, Namespace: "k8s.io", Host: "test", CgroupPath: dir, Pod: pod,
			Labels: map[string]string{sensor.IdentityLabel: "someone-else"}}); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(sensor.NewMetrics(mon, p.Programs()))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ignored := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "escape_sensor_identity_labels_ignored_total" {
			ignored = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if ignored != 2 {
		t.Errorf("escape_sensor_identity_labels_ignored_total = %v, want 2", ignored)
	}
	cgid := map[string]uint64{}
	for id, dir := range map[string]string{sdID: sdDir, fsID: fsDir} {
		var err error
		if cgid[id], err = sensor.CgroupID(dir); err != nil {
			t.Fatal(err)
		}
	}
	// Epochs of both containers, each under its own cgroup id.
	waitFor(t, func() bool {
		seen := map[string]bool{}
		for _, e := range out.events(t) {
			if e.Type == events.TypeEpoch && e.Epoch.Calls > 0 && e.Container.CgroupID == cgid[e.Container.ID] {
				seen[e.Container.ID] = true
			}
		}
		return seen[sdID] && seen[fsID]
	})
	for _, e := range out.events(t) {
		c := e.Container
		if c == nil || (c.ID != sdID && c.ID != fsID) {
			t.Fatalf("event for something else than the two containers: %+v", e)
		}
		if c.Pod == nil || c.Pod.UID != uid || c.Identity != "k8s/shop/deployment/web/nginx" {
			t.Fatalf("event's pod metadata and identity: %+v", c)
		}
	}
	// The kernel's marks: each spinner's threads are counted in their
	// container's slot, two different slots; the bystander in none.
	slots := map[uint32]string{}
	for name, proc := range map[string]*os.Process{sdID: sdProc.Process, fsID: fsProc.Process} {
		for _, tid := range cgtest.Threads(t, proc.Pid) {
			slot, _, ok, err := p.MarkOf(tid)
			if err != nil || !ok {
				t.Fatalf("thread %d of %s's process is not marked: %v", tid, name, err)
			}
			if other, dup := slots[slot]; dup && other != name {
				t.Fatalf("threads of %s and %s share slot %d", name, other, slot)
			}
			slots[slot] = name
		}
	}
	for _, tid := range cgtest.Threads(t, byProc.Process.Pid) {
		if _, _, ok, err := p.MarkOf(tid); err != nil || ok {
			t.Fatalf("the bystander's thread %d is marked (%v): its calls would be counted", tid, err)
		}
	}
}
