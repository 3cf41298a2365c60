package labtest

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/tools/doctor"
	"github.com/escape-mtd/escape/tools/lab"
)

// Kubernetes returns the inventory of the lab ($ESCAPE_LAB, else the
// default) with its single-node Kubernetes up in h1 (lab.WithKubernetes),
// bringing it up if it is not, as Ensure does for the plain lab. The
// first use on a machine builds the Kubernetes binaries into their cache
// (about 6 minutes with a cold Go build cache; make test builds them
// beforehand with make kube-bins). Under -short it skips. Inside a host
// (InHost's child) it returns the inventory the parent handed over.
func Kubernetes(t testing.TB) *lab.Inventory {
	t.Helper()
	if Child() != "" {
		// Inside a host (InHost): the parent brought the node up.
		return childInventory(t)
	}
	if testing.Short() {
		t.Skip("needs the lab's Kubernetes: not run with -short")
	}
	bin, err := BinDir()
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	if reason := doctor.LabUnavailable(context.Background()); reason != "" {
		t.Fatalf("lab unavailable on this machine: %s", reason)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if err := lab.EnsureKubeBinaries(ctx, lab.DefaultKubeCache, lab.DefaultKubeVersion); err != nil {
		t.Fatalf("kubernetes binaries: %v", err)
	}
	st := lab.GetStatus(ctx, named()...)
	if st.Healthy() && st.Inventory.Kubernetes != nil && len(st.Inventory.Hosts) >= lab.DefaultHosts &&
		st.Inventory.Agents && st.Inventory.BinDir == bin {
		if err := lab.RestartStaleAgents(ctx, st.Inventory, nil); err != nil {
			t.Fatalf("restart agents on the rebuilt binary: %v", err)
		}
		return st.Inventory
	}
	inv, err := lab.Up(ctx, append(named(), lab.WithHosts(lab.DefaultHosts), lab.WithBinDir(bin), lab.WithKubernetes(true))...)
	if err != nil {
		t.Fatalf("bring the lab up with kubernetes: %v", err)
	}
	return inv
}

// Kubectl runs kubectl with args as the lab's admin (inside the node's
// host) and returns its standard output; it fails t with kubectl's
// output if kubectl fails. stdin, if not empty, is kubectl's input
// (kubectl apply -f -).
func Kubectl(t testing.TB, inv *lab.Inventory, stdin string, args ...string) string {
	t.Helper()
	out, err := KubectlErr(inv, stdin, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// KubectlErr is Kubectl returning kubectl's failure instead of failing a
// test. Both work in the parent and inside the node's host.
func KubectlErr(inv *lab.Inventory, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := lab.Kubectl(ctx, inv, args...)
	if k := inv.Kubernetes; k != nil && Child() == k.Host {
		// Inside the node's host already (InHost's child): kubectl runs
		// here, its discovery cache in the host's private /run.
		cmd = exec.CommandContext(ctx, filepath.Join(k.BinDir, "kubectl"),
			append([]string{"--kubeconfig", lab.InsideKubeconfig, "--cache-dir", "/run/kubectl-cache"}, args...)...)
	}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
