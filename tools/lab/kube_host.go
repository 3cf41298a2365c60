package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/escape-mtd/escape/internal/atomicfile"
)

// What the node host needs before the kubelet starts: its images in the
// CRI's namespace, the kubelet's cgroup root, and the kernel tunables the
// kubelet insists on, shown to it alone.

// kubePauseRef is the pods' sandbox image, ImageRef("pause"), spelt out
// for the containerd configuration: the lab's busybox, sleeping. A real
// pause binary only sleeps and reaps; containerd kills the sandbox with
// SIGKILL when the pod goes.
const kubePauseRef = "escape.local/pause:latest"

// importKubeImages imports the sandbox image and the lab's workload images
// into the node host's containerd, in the namespace the CRI uses; pods
// name them with imagePullPolicy: Never.
func importKubeImages(ctx context.Context, inv *Inventory, h Host) error {
	busybox, ok := inv.Images["busybox"]
	if !ok {
		return errors.New("kubernetes images: the lab has no busybox image to make the sandbox image of")
	}
	pause, err := ociArchiveCmd(busybox.RootFS, kubePauseRef, []string{"/bin/sleep", "2147483647"})
	if err != nil {
		return fmt.Errorf("pack the sandbox image: %w", err)
	}
	if err := importImage(ctx, h.Containerd, KubeNamespace, pause); err != nil {
		return fmt.Errorf("sandbox image on %s: %w", h.Name, err)
	}
	for name, img := range inv.Images {
		a, err := ociArchive(img.RootFS, img.Ref)
		if err != nil {
			return fmt.Errorf("pack image %s: %w", name, err)
		}
		if err := importImage(ctx, h.Containerd, KubeNamespace, a); err != nil {
			return fmt.Errorf("image %s on %s for kubernetes: %w", name, h.Name, err)
		}
	}
	return nil
}

// prepareKubeCgroups creates the kubelet's cgroupRoot in every hierarchy,
// which the kubelet requires to exist. In cgroup v1's cpuset hierarchy a
// new cgroup starts with no CPUs and no memory nodes: each level copies
// its parent's, or no task could join it.
func prepareKubeCgroups(cgroupRoot string) error {
	parts := strings.Split(strings.Trim(cgroupRoot, "/"), "/")
	for _, root := range cgroupRoots() {
		dir := root
		for _, p := range parts {
			parent := dir
			dir = filepath.Join(dir, p)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("make cgroup %s: %w", dir, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if err := inheritCgroupValue(parent, dir, f); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// inheritCgroupValue copies file from parent to dir where dir has it empty.
func inheritCgroupValue(parent, dir, file string) error {
	cur, err := os.ReadFile(filepath.Join(dir, file))
	if errors.Is(err, os.ErrNotExist) {
		return nil // not the cpuset hierarchy
	}
	if err != nil {
		return fmt.Errorf("read %s/%s: %w", dir, file, err)
	}
	if strings.TrimSpace(string(cur)) != "" {
		return nil
	}
	val, err := os.ReadFile(filepath.Join(parent, file))
	if err != nil {
		return fmt.Errorf("read %s/%s: %w", parent, file, err)
	}
	if err := os.WriteFile(filepath.Join(dir, file), val, 0o644); err != nil {
		return fmt.Errorf("write %s/%s: %w", dir, file, err)
	}
	return nil
}

// kubeletTunables are the kernel settings the kubelet checks at start
// (pkg/kubelet/cm setupKernelTunables) and, unless protectKernelDefaults,
// sets: they are global to the machine, not the host's namespaces, and
// setting them would change the machine itself (kernel.panic=10,
// kernel.panic_on_oops=1, vm.overcommit_memory=1).
var kubeletTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// maskKernelTunables binds, in the node host's mount namespace only, a
// file with the value the kubelet wants over each of its tunables under
// /proc/sys: the kubelet (protectKernelDefaults) finds what it checks
// for, and the machine's settings stay as they are.
func maskKernelTunables(ctx context.Context, inv *Inventory, h Host) error {
	dir := filepath.Join(inv.Kubernetes.Dir, "etc", "sysctl")
	for name, val := range kubeletTunables {
		file := strings.ReplaceAll(name, "/", ".")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("kubelet tunables: %w", err)
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, file), []byte(val+"\n"), 0o444); err != nil {
			return fmt.Errorf("write the kubelet's %s: %w", name, err)
		}
		inside := filepath.Join(InsideKubeDir, "sysctl", file)
		if out, err := Command(ctx, inv, h.Name, "mount", "--bind", inside, "/proc/sys/"+name).CombinedOutput(); err != nil {
			return fmt.Errorf("show the kubelet %s=%s in %s: %v: %s", name, val, h.Name, err, out)
		}
	}
	return nil
}
