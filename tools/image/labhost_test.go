package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	runcopts "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/escape-mtd/escape/tools/lab"
)

// The namespace Kubernetes' containerd uses, which deploy/README.md tells
// operators to import into.
const k8sNamespace = "k8s.io"

// Ports of the image's agent and plane on h1, beside the lab's own agent
// (7443, metrics 9464).
const (
	imageAgentPort   = 7543
	imagePlanePort   = 7544
	imageMetricsPort = 9564
)

// host is a lab host seen by the test: its containerd and a directory
// that the root namespace sees at outside and the host at inside.
type host struct {
	t       *testing.T
	inv     *lab.Inventory
	h       lab.Host
	c       *containerd.Client
	ctx     context.Context
	outside string
	inside  string
}

func newHost(t *testing.T, inv *lab.Inventory, name string) *host {
	h, ok := inv.Host(name)
	if !ok {
		t.Fatalf("no lab host %s", name)
	}
	c, err := containerd.New(h.Containerd)
	if err != nil {
		t.Fatalf("connect %s's containerd: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	// The host's /var/lib/escape is its Dir/state (lab.Machine).
	x := &host{t: t, inv: inv, h: h, c: c, ctx: namespaces.WithNamespace(context.Background(), k8sNamespace),
		outside: filepath.Join(h.Dir, "state", "image-test"), inside: "/var/lib/escape/image-test"}
	if err := os.RemoveAll(x.outside); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(x.outside, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(x.outside) })
	return x
}

// in maps a path below the shared directory to the host's view of it.
func (x *host) in(rel string) string  { return filepath.Join(x.inside, rel) }
func (x *host) out(rel string) string { return filepath.Join(x.outside, rel) }

// ctr runs make deps' ctr inside the host, as an operator on the node.
func (x *host) ctr(args ...string) string {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append([]string{"--address", lab.InsideContainerd, "-n", k8sNamespace}, args...)
	out, err := lab.Command(ctx, x.inv, x.h.Name, "/opt/escape/bin/ctr", full...).CombinedOutput()
	if err != nil {
		x.t.Fatalf("ctr %s on %s: %v: %s", strings.Join(args, " "), x.h.Name, err, out)
	}
	return string(out)
}

// kind says how a container runs: as the DaemonSet runs the daemon, or as
// the Deployment runs the plane.
type kind int

const (
	daemonSet kind = iota
	planePod
)

// spec is the container's OCI spec: the image's environment, a read-only
// root file system and the host's network, and for the daemon what
// deploy/kubernetes/20-sensor.yaml gives it (privileged, hostPID, its host
// paths at the same paths); the plane runs as the image's user with no
// capability and no privilege escalation, as 30-plane.yaml asks.
func (x *host) spec(id string, img containerd.Image, k kind, args []string) []oci.SpecOpts {
	is, err := img.Spec(x.ctx)
	if err != nil {
		x.t.Fatalf("image config of %s: %v", img.Name(), err)
	}
	opts := []oci.SpecOpts{oci.WithProcessArgs(args...), oci.WithEnv(is.Config.Env), oci.WithProcessCwd("/"),
		oci.WithRootFSReadonly(), oci.WithHostNamespace(specs.NetworkNamespace),
		oci.WithCgroup(x.inv.CgroupsPath(x.h.Name, id))}
	switch k {
	case daemonSet:
		bind := func(p string, o ...string) specs.Mount {
			return specs.Mount{Destination: p, Type: "bind", Source: p, Options: append([]string{"rbind"}, o...)}
		}
		// As the CRI plugin does for a Bidirectional mount: the root's
		// propagation rshared, else every mount is the node's slave and
		// what the agent mounts (named network namespaces, CRIU's mask
		// tmpfs) never reaches the node's runc.
		rshared := func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			s.Linux.RootfsPropagation = "rshared"
			return nil
		}
		opts = append(opts, rshared, oci.WithPrivileged, oci.WithAllDevicesAllowed, oci.WithHostDevices,
			oci.WithHostNamespace(specs.PIDNamespace),
			oci.WithMounts([]specs.Mount{bind("/sys/kernel/btf", "ro"), bind("/sys/fs/cgroup", "rw"),
				bind("/run/containerd", "rw", "rslave"), bind("/var/lib/containerd", "rw", "rslave"),
				bind("/run/netns", "rw", "rshared"), bind(x.inside, "rw", "rshared"),
				// The DaemonSet's emptyDir at /tmp: CRIU makes its
				// kernel-feature probes' directories there, and the root
				// file system is read-only.
				{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777", "size=64m"}}}))
	case planePod:
		var uid, gid uint32
		if _, err := fmt.Sscanf(is.Config.User, "%d:%d", &uid, &gid); err != nil || uid == 0 {
			x.t.Fatalf("plane image user %q: want a non-root uid:gid", is.Config.User)
		}
		opts = append(opts, oci.WithUIDGID(uid, gid), oci.WithCapabilities(nil), oci.WithNoNewPrivileges,
			oci.WithMounts([]specs.Mount{{Destination: x.inside, Type: "bind", Source: x.inside, Options: []string{"rbind", "rw"}}}))
	}
	return opts
}

// create makes a container of img and its task, writing stdout and
// stderr to a file in the shared directory; the test deletes both.
func (x *host) create(id string, img containerd.Image, k kind, args ...string) (containerd.Task, *output) {
	x.t.Helper()
	if old, err := x.c.LoadContainer(x.ctx, id); err == nil { // a failed earlier run
		if task, err := old.Task(x.ctx, nil); err == nil {
			task.Delete(x.ctx, containerd.WithProcessKill)
		}
		old.Delete(x.ctx, containerd.WithSnapshotCleanup)
	}
	ct, err := x.c.NewContainer(x.ctx, id,
		containerd.WithRuntime("io.containerd.runc.v2", &runcopts.Options{Root: x.h.RuncRoot}),
		containerd.WithNewSnapshot(id+"-snap", img),
		// No oci.WithImageConfig: it mounts the snapshot in this process,
		// and its paths exist only in the host's mount namespace.
		containerd.WithNewSpec(x.spec(id, img, k, args)...))
	if err != nil {
		x.t.Fatalf("create container %s: %v", id, err)
	}
	x.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), k8sNamespace), time.Minute)
		defer cancel()
		if task, err := ct.Task(ctx, nil); err == nil {
			task.Kill(ctx, syscall.SIGTERM)
			if st, err := task.Wait(ctx); err == nil {
				select {
				case <-st:
				case <-time.After(10 * time.Second):
				}
			}
			task.Delete(ctx, containerd.WithProcessKill)
		}
		ct.Delete(ctx, containerd.WithSnapshotCleanup)
	})
	out := &output{}
	task, err := ct.NewTask(x.ctx, x.streams(out))
	if err != nil {
		x.t.Fatalf("create task %s: %v", id, err)
	}
	return task, out
}

// output collects a process's stdout and stderr.
type output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(b)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// streams copies a process's output into out through FIFOs on the lab's
// shared storage, which the host's shim and this process see at the same
// path. (A file:// log URI loses the output of a process that ends at
// once: the shim stops copying when the task is deleted.)
func (x *host) streams(out *output) cio.Creator {
	x.t.Helper()
	if !x.inv.SharedStorage {
		x.t.Fatal("the lab has no shared storage: the tasks' FIFOs need a directory the hosts see at the root namespace's path")
	}
	dir := filepath.Join(x.inv.Shared, "image-test-fifo")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		x.t.Fatal(err)
	}
	return cio.NewCreator(cio.WithStreams(nil, out, out), cio.WithFIFODir(dir))
}

// run runs a container of img to its end and returns its exit status and
// output.
func (x *host) run(id string, img containerd.Image, k kind, args ...string) (uint32, string) {
	x.t.Helper()
	task, out := x.create(id, img, k, args...)
	ctx, cancel := context.WithTimeout(x.ctx, 2*time.Minute)
	defer cancel()
	exit, err := task.Wait(ctx)
	if err != nil {
		x.t.Fatalf("wait for %s: %v", id, err)
	}
	if err := task.Start(ctx); err != nil {
		x.t.Fatalf("start %s: %v", id, err)
	}
	var st containerd.ExitStatus
	select {
	case st = <-exit:
	case <-ctx.Done():
		x.t.Fatalf("%s did not end in 2 minutes: %s", id, out)
	}
	task.IO().Wait() // the output copied to its end
	if _, err := task.Delete(ctx); err != nil {
		x.t.Fatalf("delete task %s: %v", id, err)
	}
	return st.ExitCode(), out.String()
}

// start starts a long-running container; the test stops it.
func (x *host) start(id string, img containerd.Image, k kind, args ...string) *output {
	x.t.Helper()
	task, out := x.create(id, img, k, args...)
	if err := task.Start(x.ctx); err != nil {
		x.t.Fatalf("start %s: %v", id, err)
	}
	return out
}

// write puts a file into the shared directory.
func (x *host) write(rel string, data []byte, mode os.FileMode) {
	x.t.Helper()
	if err := os.MkdirAll(filepath.Dir(x.out(rel)), 0o755); err != nil {
		x.t.Fatal(err)
	}
	if err := os.WriteFile(x.out(rel), data, mode); err != nil {
		x.t.Fatal(err)
	}
}

// exec runs a command in a running container and returns its output and
// exit code, collected as the tasks' own output.
func (x *host) exec(id string, args ...string) (string, uint32) {
	x.t.Helper()
	ct, err := x.c.LoadContainer(x.ctx, id)
	if err != nil {
		x.t.Fatal(err)
	}
	task, err := ct.Task(x.ctx, nil)
	if err != nil {
		x.t.Fatal(err)
	}
	sp, err := ct.Spec(x.ctx)
	if err != nil {
		x.t.Fatal(err)
	}
	pspec := *sp.Process
	pspec.Args = args
	out := &output{}
	p, err := task.Exec(x.ctx, fmt.Sprintf("exec-%d", time.Now().UnixNano()), &pspec, x.streams(out))
	if err != nil {
		x.t.Fatalf("exec %v in %s: %v", args, id, err)
	}
	ctx, cancel := context.WithTimeout(x.ctx, time.Minute)
	defer cancel()
	exit, err := p.Wait(ctx)
	if err != nil {
		x.t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		x.t.Fatalf("start exec %v in %s: %v", args, id, err)
	}
	st := <-exit
	p.IO().Wait()
	p.Delete(ctx)
	return out.String(), st.ExitCode()
}

// shareDir makes the test's directory a shared mount inside the host, as a
// node's Bidirectional hostPath is, until the test ends.
func (x *host) shareDir() {
	x.t.Helper()
	sh := func(script string) error {
		out, err := lab.Command(context.Background(), x.inv, x.h.Name, "sh", "-c", script).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s on %s: %w: %s", script, x.h.Name, err, out)
		}
		return nil
	}
	if err := sh("mount --bind " + x.inside + " " + x.inside + " && mount --make-shared " + x.inside); err != nil {
		x.t.Fatal(err)
	}
	x.t.Cleanup(func() { _ = sh("umount -R -l " + x.inside) })
}
