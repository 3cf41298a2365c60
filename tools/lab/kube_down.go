package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Down's part for the Kubernetes node. Most of what the node leaves goes
// with the lab anyway: its processes live in the host's namespaces (the
// sweep kills them), its iptables chains (KUBE-FIREWALL,
// KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT, the CNI's masquerade) in the
// host's network namespace, which Down deletes, its mounts (volume
// tmpfs, sandbox network namespaces, the tunables' masks) in the host's
// mount namespace, its cgroups under the lab's cgroup subtree, and its
// files under the lab's root. What stays on the machine's own file
// system is the mount points Up made for the binds, removed here.

// stopKube stops the node's components, the kubelet first so that it
// restarts no pod while the containers go, by their pid files.
func stopKube(c config) {
	for i := len(kubeComponents) - 1; i >= 0; i-- {
		comp := kubeComponents[i]
		files, _ := filepath.Glob(filepath.Join(c.runDir, "*", comp+".pid"))
		for _, pf := range files {
			if pid, err := readPID(pf); err == nil && isKubeComponent(pid, comp) {
				stopProcess(pid, 10*time.Second)
			}
		}
	}
}

// isKubeComponent tells a live component from a pid reused by another program.
func isKubeComponent(pid int, comp string) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil && alive(pid) && filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == comp
}
