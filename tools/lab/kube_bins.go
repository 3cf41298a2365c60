package lab

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
)

// kubeBuildScript builds the Kubernetes binaries into the cache, or
// checks that the cache already has them whole (every binary answers
// --version with the wanted release); `make kube-bins` runs it too.
//
//go:embed kube_build.sh
var kubeBuildScript string

// EnsureKubeBinaries makes sure cache/<version> holds kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet and kubectl of version,
// building them from the Go module k8s.io/kubernetes if not (about 6
// minutes and 2 GB of memory on 2 cores with a cold Go build cache;
// seconds when they are cached). The build's progress goes to stderr.
func EnsureKubeBinaries(ctx context.Context, cache, version string) error {
	cmd := exec.CommandContext(ctx, "bash", "-c", kubeBuildScript, "kube-bins", version)
	cmd.Env = append(os.Environ(), "KUBE_CACHE="+cache)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kubernetes %s binaries in %s: %w", version, cache, err)
	}
	return nil
}
