package lab_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// machineState is what the lab called name may leave behind, read from
// the machine itself rather than from the lab's own bookkeeping. Links are
// those of the root namespace, which no lab may touch.
type machineState struct {
	netns, links, mounts []string
	procs                map[int]string
}

func snapshot(t *testing.T, name string) machineState {
	t.Helper()
	var s machineState
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), name+"-") {
			s.netns = append(s.netns, e.Name())
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatalf("list links: %v", err)
	}
	for _, l := range links {
		s.links = append(s.links, l.Attrs().Name)
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		// Other labs (the shared one) may come and go meanwhile: only
		// this lab's mounts and namespaces count.
		if f := strings.Fields(line); len(f) > 4 && (strings.Contains(f[4], "/"+name+"-lab") || strings.Contains(f[4], "/netns/"+name+"-")) {
			s.mounts = append(s.mounts, f[4])
		}
	}
	s.procs = map[int]string{}
	// A lab's daemons run with the standard paths of their own machine:
	// they are told by their network namespace, or by the lab's name on
	// their command line (nsenter, unshare).
	netns := map[string]bool{}
	for _, n := range s.netns {
		var st syscall.Stat_t
		if syscall.Stat("/run/netns/"+n, &st) == nil {
			netns[fmt.Sprintf("net:[%d]", st.Ino)] = true
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && (netns[ns] || bytes.Contains(cmd, []byte(name+"-lab"))) {
			s.procs[pid] = string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
		}
	}
	slices.Sort(s.netns)
	slices.Sort(s.links)
	slices.Sort(s.mounts)
	return s
}

// added lists what is in after but not in before, for any slice.
func added(before, after []string) []string {
	var out []string
	for _, a := range after {
		if !slices.Contains(before, a) {
			out = append(out, a)
		}
	}
	return out
}

// ownLab is the options of a lab of a test's own (its own name, so it never
// touches the shared lab other tests use), with agents from the repo's bin.
func ownLab(t *testing.T, name string, more ...lab.Option) []lab.Option {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a lab: not run with -short")
	}
	bin, err := labtest.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	return append([]lab.Option{lab.WithName(name), lab.WithHosts(2), lab.WithSharedSize("256m"), lab.WithBinDir(bin)}, more...)
}

// TestLabLifecycle builds a lab of its own, runs a container in it, tears
// it down, and compares the machine before and after.
func TestLabLifecycle(t *testing.T) {
	const name = "escapelc"
	opts := ownLab(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_ = lab.Down(ctx, opts...) // a previous crashed run
	before := snapshot(t, name)

	// Concurrent ups are serialized: both succeed and agree on the lab.
	var wg sync.WaitGroup
	invs := make([]*lab.Inventory, 2)
	errs := make([]error, 2)
	for i := range invs {
		wg.Add(1)
		go func() { defer wg.Done(); invs[i], errs[i] = lab.Up(ctx, opts...) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("up #%d: %v", i, err)
		}
	}
	if invs[0].PKI.Operator.Cert != invs[1].PKI.Operator.Cert || invs[0].Hosts[1].Agent != invs[1].Hosts[1].Agent {
		t.Fatalf("concurrent ups built different labs")
	}
	inv := invs[0]
	st := lab.GetStatus(ctx, opts...)
	if !st.Healthy() || len(st.Hosts) != 2 || !st.Plane.MountNS {
		t.Fatalf("status after up: %+v", st)
	}
	for _, h := range st.Hosts {
		if !h.Agent || !h.AgentAnswers || !h.MountNS {
			t.Errorf("host %s after up: %+v", h.Name, h)
		}
	}
	_, _, counter := runCounter(ctx, t, inv, inv.Hosts[0], "lifecycle")
	time.Sleep(300 * time.Millisecond)
	if readCounter(t, counter) < 1 {
		t.Fatal("the lab's container is not running")
	}
	// A container the agent runs (its own netns, inside the host's /run)
	// is left running: down must take it too.
	agent, err := lab.AgentClient(inv, "h2")
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	ip := netip.MustParsePrefix("198.18.1.241/15")
	spec := migrate.Spec{ID: "lifecycle-redis", Image: inv.Images["redis"].Ref, IP: ip, MAC: "02:42:c6:12:01:f1",
		Args: []string{"/usr/bin/redis-server", "--protected-mode", "no", "--save", ""}}
	if _, err := agent.Start(ctx, spec, migrate.StartOptions{Address: true,
		Lease: migrate.Lease{IP: ip.Addr(), Generation: 1, NotAfter: time.Now().Add(time.Hour)}}); err != nil {
		t.Fatalf("start a container through h2's agent: %v", err)
	}

	during := snapshot(t, name)
	if len(added(before.netns, during.netns)) < 5 || len(added(before.mounts, during.mounts)) == 0 || len(during.procs) < 2 {
		t.Fatalf("the lab left no trace while up (netns %v, mounts %v, procs %v): the before/after check would prove nothing",
			added(before.netns, during.netns), added(before.mounts, during.mounts), during.procs)
	}
	if left := lab.Leftovers(opts...); len(left) == 0 {
		t.Fatal("Leftovers reports nothing while the lab is up")
	}

	if err := lab.Down(ctx, opts...); err != nil {
		t.Fatalf("down: %v", err)
	}
	after := snapshot(t, name)
	if a := added(before.netns, after.netns); len(a) > 0 {
		t.Errorf("namespaces left: %v", a)
	}
	if a := added(before.links, after.links); len(a) > 0 {
		t.Errorf("links left in the root namespace: %v", a)
	}
	if a := added(before.mounts, after.mounts); len(a) > 0 {
		t.Errorf("mounts left: %v", a)
	}
	if len(after.procs) > 0 {
		t.Errorf("processes left: %v", after.procs)
	}
	if left := lab.Leftovers(opts...); len(left) > 0 {
		t.Errorf("Leftovers after down: %v", left)
	}
}

// TestDownAfterCrashedUp builds a lab without shared storage and with
// extra agent settings, checks both, then simulates an up that died half
// way: containerd and an agent killed and the inventory never written.
// Down must still clean up, mount namespaces included.
func TestDownAfterCrashedUp(t *testing.T) {
	const name = "escapecr"
	settings := filepath.Join(t.TempDir(), "settings.yaml")
	if err := os.WriteFile(settings, []byte("sensor:\n  threshold: 42\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := ownLab(t, name, lab.WithSharedSize("64m"), lab.WithSharedStorage(false), lab.WithAgentSettings(settings))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	inv, err := lab.Up(ctx, opts...)
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	out, err := lab.Command(ctx, inv, "h1", "sh", "-c", "test ! -e "+inv.Shared+" && cat /etc/escape/escape.yaml").CombinedOutput()
	if err != nil {
		t.Errorf("without shared storage h1 still sees %s: %v %s", inv.Shared, err, out)
	}
	if !strings.Contains(string(out), "threshold: 42") || strings.Contains(string(out), "shared:") {
		t.Errorf("h1's agent config lacks the extra setting or names shared storage:\n%s", out)
	}
	if err := lab.HelloAgent(ctx, inv, "h2"); err != nil {
		t.Errorf("agent with extra settings: %v", err)
	}
	for _, pf := range []string{inv.Hosts[0].PIDFile, inv.Hosts[1].AgentPIDFile} {
		pid, err := os.ReadFile(pf)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(strings.TrimSpace(string(pid)))
		if err := syscall.Kill(p, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d (%s): %v", p, pf, err)
		}
	}
	if err := os.Remove(lab.InventoryPath(inv.Root)); err != nil {
		t.Fatal(err)
	}
	if err := lab.Down(ctx, opts...); err != nil {
		t.Fatalf("down after a crashed up: %v", err)
	}
	if left := lab.Leftovers(opts...); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if _, err := os.Stat(inv.Hosts[0].MountNS); err == nil {
		t.Errorf("mount namespace file %s left", inv.Hosts[0].MountNS)
	}
}

// runCounter starts a busybox container on host that counts in a file,
// and returns its container and task. The counter proves later whether a
// restored process went on from its saved state or started over.
func runCounter(ctx context.Context, t *testing.T, inv *lab.Inventory, host lab.Host, id string) (containerd.Container, containerd.Task, string) {
	t.Helper()
	// The counter is written to a directory of the shared storage, which
	// the host sees at the same path as the test, bind-mounted into the
	// container: no exec, no FIFOs.
	outDir := filepath.Join(inv.Shared, "lab-test", id)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(outDir) })
	c, err := containerd.New(host.Containerd)
	if err != nil {
		t.Fatalf("connect %s: %v", host.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	ctx = namespaces.WithNamespace(ctx, inv.Namespace)
	if old, err := c.LoadContainer(ctx, id); err == nil { // a previous failed run
		if task, err := old.Task(ctx, nil); err == nil {
			task.Delete(ctx, containerd.WithProcessKill)
		}
		old.Delete(ctx, containerd.WithSnapshotCleanup)
	}
	img, err := c.GetImage(ctx, inv.Images["busybox"].Ref)
	if err != nil {
		t.Fatalf("image on %s: %v", host.Name, err)
	}
	ctr, err := c.NewContainer(ctx, id,
		containerd.WithRuntime("io.containerd.runc.v2", &options.Options{Root: host.RuncRoot}),
		containerd.WithNewSnapshot(id+"-snap", img),
		// No oci.WithImageConfig: it mounts the image's snapshot in this
		// process to read /etc/group, and the snapshot's paths exist only
		// inside the host's own mount namespace.
		containerd.WithNewSpec(oci.WithEnv([]string{"PATH=/bin:/usr/bin"}), oci.WithCgroup(inv.CgroupsPath(host.Name, id)),
			oci.WithMounts([]specs.Mount{{Destination: "/out", Type: "bind", Source: outDir, Options: []string{"rbind", "rw"}}}),
			oci.WithProcessArgs("/bin/sh", "-c", `i=0; while true; do i=$((i+1)); echo $i > /out/c.tmp; mv /out/c.tmp /out/counter; sleep 0.05; done`)))
	if err != nil {
		t.Fatalf("create container on %s: %v", host.Name, err)
	}
	t.Cleanup(func() {
		cctx := namespaces.WithNamespace(context.Background(), inv.Namespace)
		if task, err := ctr.Task(cctx, nil); err == nil {
			task.Delete(cctx, containerd.WithProcessKill)
		}
		ctr.Delete(cctx, containerd.WithSnapshotCleanup)
	})
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatalf("create task: %v", err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task: %v", err)
	}
	return ctr, task, filepath.Join(outDir, "counter")
}

func readCounter(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read counter: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("counter reads %q: %v", data, err)
	}
	return n
}

// TestCheckpointRestoreOnHost checkpoints a container on one lab host into
// shared storage, which stops it, and restores it on the same host from
// there: the process must go on from its saved state. containerd, runc and
// CRIU all run inside the host's own mount namespace.
func TestCheckpointRestoreOnHost(t *testing.T) {
	inv := labtest.Ensure(t)
	host := inv.Hosts[0]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ctr, task, counter := runCounter(ctx, t, inv, host, "cr-counter")
	ctx = namespaces.WithNamespace(ctx, inv.Namespace)
	time.Sleep(2 * time.Second)

	dir := filepath.Join(inv.Shared, "checkpoints", "lab-test", "cr-counter")
	os.RemoveAll(dir)
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(dir)) })
	before := readCounter(t, counter)
	if before < 10 {
		t.Fatalf("counter only reached %d before the checkpoint", before)
	}
	if _, err := task.Checkpoint(ctx, containerd.WithCheckpointImagePath(dir), func(ci *containerd.CheckpointTaskInfo) error {
		ci.Options.(*options.CheckpointOptions).Exit = true
		return nil
	}); err != nil {
		t.Fatalf("checkpoint on %s: %v", host.Name, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "inventory.img")); err != nil {
		t.Fatalf("no CRIU image in shared storage: %v", err)
	}
	st, err := task.Status(ctx)
	if err != nil || st.Status != containerd.Stopped {
		t.Fatalf("task after checkpoint with exit: %v %v", st.Status, err)
	}
	if _, err := task.Delete(ctx); err != nil {
		t.Fatalf("delete checkpointed task: %v", err)
	}

	restored, err := ctr.NewTask(ctx, cio.NullIO, containerd.WithRestoreImagePath(dir))
	if err != nil {
		t.Fatalf("restore on %s: %v", host.Name, err)
	}
	if err := restored.Start(ctx); err != nil {
		t.Fatalf("start restored task: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	after := readCounter(t, counter)
	if after <= before {
		t.Fatalf("restored process started over or stalled: counter %d before the checkpoint, %d after the restore", before, after)
	}
}
