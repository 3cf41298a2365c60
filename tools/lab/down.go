package lab

import (
	"github.com/escape-mtd/escape/arp"

	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// down tears the lab down in dependency order and then checks that nothing
// is left: containers first (so runc unmounts their rootfs), then every
// process inside a lab namespace or cgroup, then mounts, namespaces,
// cgroups and files.
func down(ctx context.Context, c config) error {
	stopKube(c)
	inv, _ := LoadInventory(ctx, c.root)
	if inv != nil {
		for _, h := range inv.Hosts {
			deleteContainers(ctx, c.log, h.Containerd)
		}
	}
	// Daemons first, by pid file, so they cannot restart containers:
	// agents (which drive containerd), then containerd.
	agents, _ := filepath.Glob(filepath.Join(c.runDir, "*", "agent.pid"))
	for _, pf := range agents {
		if pid, err := readPID(pf); err == nil && isAgent(pid) {
			stopProcess(pid, 5*time.Second)
		}
	}
	pidFiles, _ := filepath.Glob(filepath.Join(c.runDir, "*", "containerd.pid"))
	for _, pf := range pidFiles {
		if pid, err := readPID(pf); err == nil && isContainerd(pid) {
			stopProcess(pid, 5*time.Second)
		}
	}
	for _, pid := range labProcesses(c) {
		c.log.Debug("killing lab process", zap.Int("pid", pid))
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	waitGone(labProcesses, c, 5*time.Second)

	var errs []error
	for _, m := range labMounts(c) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	names, err := listLabNetns(c.netnsPrefix())
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range names {
		if err := arp.DeleteNetns(n); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, removeCgroups(c.name)...)
	if err := removeOldKdat(); err != nil {
		errs = append(errs, err)
	}
	if err := removeKubeMountpoints(c); err != nil {
		errs = append(errs, err)
	}
	left := kubeMountpointsLeft(c) // its record goes with the run directory
	for _, d := range []string{c.root, c.runDir} {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", d, err))
		}
	}
	if left := append(left, leftovers(c)...); len(left) > 0 {
		errs = append(errs, fmt.Errorf("left behind: %s", strings.Join(left, "; ")))
	}
	return errors.Join(errs...)
}

// deleteContainers kills and deletes every task and container the host's
// daemon knows, in every namespace, so runc releases mounts and cgroups.
func deleteContainers(ctx context.Context, log *zap.Logger, socket string) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := containerd.New(socket, containerd.WithTimeout(2*time.Second))
	if err != nil {
		return // daemon gone: the process sweep below handles its leftovers
	}
	defer c.Close()
	nss, err := c.NamespaceService().List(ctx)
	if err != nil {
		return
	}
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		ctrs, err := c.Containers(nctx)
		if err != nil {
			continue
		}
		for _, ctr := range ctrs {
			if task, err := ctr.Task(nctx, nil); err == nil {
				_ = task.Kill(nctx, syscall.SIGKILL)
				if ch, err := task.Wait(nctx); err == nil {
					select {
					case <-ch:
					case <-time.After(5 * time.Second):
					}
				}
				if _, err := task.Delete(nctx, containerd.WithProcessKill); err != nil {
					log.Debug("delete task", zap.String("id", ctr.ID()), zap.Error(err))
				}
			}
			if err := ctr.Delete(nctx, containerd.WithSnapshotCleanup); err != nil {
				log.Debug("delete container", zap.String("id", ctr.ID()), zap.Error(err))
			}
		}
	}
}

func isContainerd(pid int) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil && strings.HasSuffix(strings.TrimSuffix(exe, " (deleted)"), "/containerd")
}

// labProcesses finds every live process that belongs to the lab: inside a
// lab network or mount namespace, inside the lab's cgroup subtree, or
// started with the lab's directories on its command line.
func labProcesses(c config) []int {
	nsInodes := map[uint64]bool{}
	if names, err := listLabNetns(c.netnsPrefix()); err == nil {
		for _, n := range names {
			var st unix.Stat_t
			if unix.Stat(arp.NetnsPath(n), &st) == nil {
				nsInodes[st.Ino] = true
			}
		}
	}
	mntInodes := map[uint64]bool{}
	for _, f := range mountNSFiles(c) {
		if ino := nsInode(f); ino != 0 {
			mntInodes[ino] = true
		}
	}
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid <= 1 || !alive(pid) {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) == nil && nsInodes[st.Ino] {
			pids = append(pids, pid)
			continue
		}
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/mnt", pid), &st) == nil && mntInodes[st.Ino] {
			pids = append(pids, pid)
			continue
		}
		if cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err == nil && inLabCgroup(string(cg), c.name) {
			pids = append(pids, pid)
			continue
		}
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil &&
			(strings.Contains(string(cmd), c.runDir+"/") || strings.Contains(string(cmd), c.root+"/")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func inLabCgroup(procCgroup, parent string) bool {
	for _, line := range strings.Split(procCgroup, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && strings.HasPrefix(parts[2], "/"+parent+"/") {
			return true
		}
	}
	return false
}

func waitGone(find func(config) []int, c config, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && len(find(c)) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
}

// labMounts lists the mount points under the lab's directories, deepest
// first so that nested mounts come off before their parents.
func labMounts(c config) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if under(mp, c.root) || under(mp, c.runDir) {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// unescapeMount undoes mountinfo's octal escaping of spaces and the like.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupRoots lists the mounted cgroup hierarchies (v1 controllers and the
// unified v2 tree, or just /sys/fs/cgroup on a pure v2 host).
func cgroupRoots() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var roots []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		sep := strings.Index(line, " - ")
		fields := strings.Fields(line)
		if sep < 0 || len(fields) < 5 {
			continue
		}
		fs := strings.Fields(line[sep+3:])
		if len(fs) > 0 && (fs[0] == "cgroup" || fs[0] == "cgroup2") {
			roots = append(roots, unescapeMount(fields[4]))
		}
	}
	return roots
}

// removeCgroups removes the lab's cgroup subtree in every hierarchy,
// children before parents (cgroup directories only rmdir when empty).
func removeCgroups(parent string) []error {
	var errs []error
	for _, root := range cgroupRoots() {
		top := filepath.Join(root, parent)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := unix.Rmdir(dirs[i]); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errs
}

// Leftovers lists what the lab configured by opts has left behind:
// namespaces, mounts, processes, cgroups and directories. Empty after a
// successful Down; the tests assert exactly that.
func Leftovers(opts ...Option) []string { return leftovers(newConfig(opts)) }

func leftovers(c config) []string {
	var left []string
	if names, _ := listLabNetns(c.netnsPrefix()); len(names) > 0 {
		left = append(left, "netns "+strings.Join(names, ","))
	}
	if m := labMounts(c); len(m) > 0 {
		left = append(left, "mounts "+strings.Join(m, ","))
	}
	if p := labProcesses(c); len(p) > 0 {
		left = append(left, fmt.Sprintf("processes %v", p))
	}
	for _, r := range cgroupRoots() {
		if _, err := os.Stat(filepath.Join(r, c.name)); err == nil {
			left = append(left, "cgroup "+filepath.Join(r, c.name))
		}
	}
	for _, d := range []string{c.root, c.runDir} {
		if _, err := os.Stat(d); err == nil {
			left = append(left, "dir "+d)
		}
	}
	return left
}
