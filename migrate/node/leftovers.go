package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupHierarchies are where a container's cgroup is looked for: the
// unified hierarchy (cgroup v2), then v1 controllers that every task
// belongs to.
var cgroupHierarchies = [...]string{"", "pids", "memory", "freezer"}

// killLeftovers kills every process left in the cgroup of container id on
// h and returns their pids. A restore whose CRIU was killed midway (a lazy
// restore whose daemon died or stalled) can leave restored tasks that were
// reparented to the host's init: runc never learnt of them, so neither it
// nor containerd can kill them, and one still holds the container's
// sockets and memory. Only call it when no copy of the container should
// run on h.
func (n *Node) killLeftovers(id string) ([]int, error) {
	var killed []int
	for range 100 {
		pids, err := n.cgroupProcs(id)
		if err != nil || len(pids) == 0 {
			return killed, err
		}
		for _, pid := range pids {
			if syscall.Kill(pid, syscall.SIGKILL) == nil && !slices.Contains(killed, pid) {
				killed = append(killed, pid)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return killed, fmt.Errorf("leftover processes of %s on %s: still there after 1s of SIGKILL", id, n.cfg.Name)
}

// cgroupProcs lists the processes in the cgroup of container id on h
// (none if it has no cgroup).
func (n *Node) cgroupProcs(id string) ([]int, error) {
	cg := n.cgroupPath(id)
	if cg == "" || cg == "/" {
		// An adopted container's cgroup that is no cgroupfs path (the
		// systemd driver's): never the root's processes.
		return nil, nil
	}
	for _, hier := range cgroupHierarchies {
		p := filepath.Join("/sys/fs/cgroup", hier, cg, "cgroup.procs")
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("processes of %s on %s: %w", id, n.cfg.Name, err)
		}
		var pids []int
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				return nil, fmt.Errorf("processes of %s on %s: %s: bad pid %q", id, n.cfg.Name, p, f)
			}
			pids = append(pids, pid)
		}
		return pids, nil
	}
	return nil, nil
}
