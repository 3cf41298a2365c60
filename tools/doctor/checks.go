package doctor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	criu "github.com/checkpoint-restore/go-criu/v7"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/escape-mtd/escape/tools/lab"
)

func checkRoot(context.Context, *config) (string, string, error) {
	if os.Geteuid() != 0 {
		return "", "run as root (the sensor loads BPF programs; the plane drives containerd and CRIU)",
			fmt.Errorf("running as uid %d", os.Geteuid())
	}
	return "uid 0", "", nil
}

func checkBTF(context.Context, *config) (string, string, error) {
	const path = "/sys/kernel/btf/vmlinux"
	if _, err := os.Stat(path); err != nil {
		return "", "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (CO-RE needs the kernel's BTF)", fmt.Errorf("%s: %w", path, err)
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return "", "the kernel's BTF is unreadable; check " + path, fmt.Errorf("parse kernel BTF: %w", err)
	}
	var ev *btf.Struct
	if err := spec.TypeByName("trace_event_raw_sys_enter", &ev); err != nil {
		return "", "the kernel's BTF lacks the syscall tracepoint types", fmt.Errorf("find trace_event_raw_sys_enter: %w", err)
	}
	return path + " (CO-RE types present)", "", nil
}

// cgroupProbe is a tracepoint program that records, for one process, the
// cgroup id the kernel reports for it. It proves in one go that bpf()
// works, that raw_syscalls/sys_enter can be hooked, and that the id the
// sensor filters on is the one userspace resolves from the cgroup tree.
func cgroupProbe(pid int) (*ebpf.Map, *ebpf.Program, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		return nil, nil, fmt.Errorf("create map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.RawTracepoint,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.FnGetCurrentPidTgid.Call(),
			asm.RSh.Imm(asm.R0, 32),
			asm.JNE.Imm(asm.R0, int32(pid), "exit"),
			asm.FnGetCurrentCgroupId.Call(),
			asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
			asm.StoreImm(asm.RFP, -16, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -16),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnMapUpdateElem.Call(),
			asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
			asm.Return(),
		},
	})
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("load program: %w", err)
	}
	return m, prog, nil
}

func checkBPF(context.Context, *config) (string, string, error) {
	m, prog, err := cgroupProbe(os.Getpid())
	if err != nil {
		return "", "run as root (CAP_BPF and CAP_PERFMON), and check kernel.unprivileged_bpf_disabled / LSM policy", err
	}
	m.Close()
	prog.Close()
	return "loaded a raw tracepoint program", "", nil
}

func checkTracepoint(context.Context, *config) (string, string, error) {
	m, prog, err := cgroupProbe(os.Getpid())
	if err != nil {
		return "", "fix the bpf check first", err
	}
	defer m.Close()
	defer prog.Close()
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_enter", Program: prog})
	if err != nil {
		return "", "use a kernel with CONFIG_FTRACE_SYSCALLS (raw_syscalls tracepoints)", fmt.Errorf("attach raw_syscalls/sys_enter: %w", err)
	}
	l.Close()
	detail := "raw_syscalls/sys_enter attachable"
	if _, err := os.Stat("/sys/kernel/tracing/events/raw_syscalls/sys_enter/id"); err != nil {
		detail += " (tracefs not mounted: the classic tracepoint needs `mount -t tracefs nodev /sys/kernel/tracing`; tp_btf does not)"
	}
	return detail, "", nil
}

// CgroupV2Mount returns where the unified (v2) hierarchy is mounted:
// /sys/fs/cgroup on a pure v2 host, /sys/fs/cgroup/unified on a hybrid one.
func CgroupV2Mount() (string, error) {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p, nil
		}
	}
	return "", errors.New("no cgroup2 hierarchy mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified")
}

// CgroupIDOf resolves the cgroup id bpf_get_current_cgroup_id() returns for
// pid: the inode of its directory in the unified hierarchy.
func CgroupIDOf(pid int) (uint64, string, error) {
	mnt, err := CgroupV2Mount()
	if err != nil {
		return 0, "", err
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return 0, "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			dir := filepath.Join(mnt, rest)
			var st unix.Stat_t
			if err := unix.Stat(dir, &st); err != nil {
				return 0, "", fmt.Errorf("stat %s: %w", dir, err)
			}
			return st.Ino, dir, nil
		}
	}
	return 0, "", fmt.Errorf("pid %d has no cgroup v2 membership (no 0:: line in /proc/%d/cgroup)", pid, pid)
}

// checkCgroupID proves that the id userspace resolves for a container-like
// process (a child moved into a fresh cgroup) is the id the kernel hands
// the BPF program, on this host's layout.
func checkCgroupID(ctx context.Context, _ *config) (string, string, error) {
	const remedy = "mount cgroup2 (pure v2 at /sys/fs/cgroup, or hybrid at /sys/fs/cgroup/unified)"
	mnt, err := CgroupV2Mount()
	if err != nil {
		return "", remedy, err
	}
	dir := filepath.Join(mnt, fmt.Sprintf("escape-doctor-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", remedy, fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	defer os.Remove(dir)
	child := exec.CommandContext(ctx, "sleep", "0.3")
	if err := child.Start(); err != nil {
		return "", "", fmt.Errorf("start probe child: %w", err)
	}
	defer child.Wait()
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(child.Process.Pid)), 0o644); err != nil {
		return "", remedy, fmt.Errorf("move probe child into %s: %w", dir, err)
	}
	id, resolved, err := CgroupIDOf(child.Process.Pid)
	if err != nil {
		return "", remedy, err
	}
	m, prog, err := cgroupProbe(child.Process.Pid)
	if err != nil {
		return "", "fix the bpf check first", err
	}
	defer m.Close()
	defer prog.Close()
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_enter", Program: prog})
	if err != nil {
		return "", "fix the tracepoint check first", err
	}
	defer l.Close()
	if err := child.Wait(); err != nil { // its exit_group fires the probe
		return "", "", fmt.Errorf("probe child: %w", err)
	}
	var got uint64
	if err := m.Lookup(uint32(0), &got); err != nil {
		return "", "", fmt.Errorf("read probe map: %w", err)
	}
	if got != id {
		return "", remedy + "; the sensor cannot match containers on this layout",
			fmt.Errorf("kernel reports cgroup id %d, %s has inode %d", got, resolved, id)
	}
	layout := "pure v2"
	if mnt == "/sys/fs/cgroup/unified" {
		layout = "hybrid (v1 controllers + unified v2)"
	}
	return fmt.Sprintf("%s; kernel and %s agree on id %d", layout, resolved, id), "", nil
}

func (c *config) sockets(ctx context.Context) []string {
	if len(c.containerd) > 0 {
		return c.containerd
	}
	if inv, err := lab.LoadInventory(ctx, c.labRoot); err == nil {
		var out []string
		for _, h := range inv.Hosts {
			out = append(out, h.Containerd)
		}
		return out
	}
	return []string{"/run/containerd/containerd.sock"}
}

func checkContainerd(ctx context.Context, c *config) (string, string, error) {
	var found []string
	for _, sock := range c.sockets(ctx) {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		cl, err := containerd.New(sock, containerd.WithTimeout(time.Second))
		if err != nil {
			cancel()
			return "", "start containerd (escape-lab up starts one per lab host), or pass --containerd SOCKET",
				fmt.Errorf("connect %s: %w", sock, err)
		}
		v, err := cl.Version(cctx)
		cl.Close()
		cancel()
		if err != nil {
			return "", "start containerd, or pass --containerd SOCKET", fmt.Errorf("version from %s: %w", sock, err)
		}
		if !versionAtLeast(v.Version, 2, 0) {
			return "", "install containerd 2.x (make deps)", fmt.Errorf("%s runs containerd %s, need >= 2.0", sock, v.Version)
		}
		found = append(found, sock+" "+v.Version)
	}
	return strings.Join(found, ", "), "", nil
}

// checkContainerdBinaries checks what the lab starts on each host.
func checkContainerdBinaries(ctx context.Context, c *config) (string, string, error) {
	const remedy = "install containerd 2.1 (make deps)"
	bin := filepath.Join(c.prefix, "bin")
	if !executable(filepath.Join(bin, "containerd-shim-runc-v2")) {
		return "", remedy, fmt.Errorf("%s/containerd-shim-runc-v2 missing", bin)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "containerd"), "--version").Output()
	if err != nil {
		return "", remedy, fmt.Errorf("%s/containerd --version: %w", bin, err)
	}
	f := strings.Fields(string(out))
	if len(f) < 3 || !versionAtLeast(f[2], 2, 1) {
		return "", remedy, fmt.Errorf("unexpected containerd version %q, need >= 2.1", strings.TrimSpace(string(out)))
	}
	return bin + "/containerd " + f[2], "", nil
}

func checkRunc(ctx context.Context, _ *config) (string, string, error) {
	out, err := exec.CommandContext(ctx, "runc", "--version").Output()
	if err != nil {
		return "", "install runc (make deps)", fmt.Errorf("runc --version: %w", err)
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]), "", nil
}

// CRIUPath is the CRIU that containerd's runc will use: the private
// prefix's wrapper if make deps installed one, else whatever is on PATH.
func (c *config) criuPath() string {
	if p := filepath.Join(c.prefix, "bin", "criu"); executable(p) {
		return p
	}
	if p, err := exec.LookPath("criu"); err == nil {
		return p
	}
	return ""
}

func checkCRIU(ctx context.Context, c *config) (string, string, error) {
	path := c.criuPath()
	if path == "" {
		return "", "install CRIU >= 4.2 (make deps)", errors.New("criu not found")
	}
	// Ask CRIU itself over its RPC interface (criu swrk), as runc does,
	// rather than parsing --version text.
	rpc := criu.MakeCriu()
	rpc.SetCriuPath(path)
	v, err := rpc.GetCriuVersion()
	if err != nil {
		return "", "reinstall CRIU (make deps)", fmt.Errorf("%s version over RPC: %w", path, err)
	}
	major, minor := v/10000, (v/100)%100
	kmaj, kmin := kernelVersion()
	if err := criuFitsKernel(major, minor, kmaj, kmin); err != nil {
		return "", "install CRIU >= 4.2 (make deps puts Debian unstable's CRIU in a private prefix)", err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	chk, err := exec.CommandContext(cctx, path, "check").CombinedOutput()
	if err != nil {
		return "", "see `criu check` output; CRIU needs root and a kernel with checkpoint/restore support",
			fmt.Errorf("criu check: %v: %s", err, lastLine(chk))
	}
	return fmt.Sprintf("%s: CRIU %d.%d, criu check: %s", path, major, minor, lastLine(chk)), "", nil
}

// criuFitsKernel rejects CRIU < 4.2 on kernels >= 6.16, whose dump hangs
// forever (fixed in 4.2): such a CRIU is never even tried.
func criuFitsKernel(major, minor, kmaj, kmin int) error {
	if (kmaj > 6 || (kmaj == 6 && kmin >= 16)) && (major < 4 || (major == 4 && minor < 2)) {
		return fmt.Errorf("CRIU %d.%d on kernel %d.%d: dump will hang", major, minor, kmaj, kmin)
	}
	return nil
}

func checkIptables(ctx context.Context, _ *config) (string, string, error) {
	out, err := exec.CommandContext(ctx, "iptables-restore", "--version").CombinedOutput()
	if err != nil {
		return "", "install iptables (make deps): a migration guards the destination's namespace with iptables-restore, and CRIU locks the network with it when criu_network_lock is iptables",
			fmt.Errorf("iptables-restore: %w", err)
	}
	return lastLine(out), "", nil
}

// checkNftables asks the kernel for its inet tables: CRIU's default network
// lock in the plane (criu_network_lock: nftables) is one such table.
func checkNftables(context.Context, *config) (string, string, error) {
	c, err := nftables.New()
	if err != nil {
		return "", "", fmt.Errorf("nftables: %w", err)
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return "", "use a kernel with CONFIG_NF_TABLES_INET, or set criu_network_lock: iptables in the plane's configuration",
			fmt.Errorf("list inet tables: %w", err)
	}
	return fmt.Sprintf("inet family available (%d tables)", len(ts)), "", nil
}

// checkNetns creates a network namespace on a throw-away thread: the
// thread is never unlocked, so the runtime discards it with its namespace.
func checkNetns(context.Context, *config) (string, string, error) {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- unix.Unshare(unix.CLONE_NEWNET)
	}()
	if err := <-errc; err != nil {
		return "", "run as root on a kernel with CONFIG_NET_NS", fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return "", "install util-linux (make deps)", errors.New("nsenter not found")
	}
	return "created a network namespace", "", nil
}

func kernelVersion() (int, int) {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(uts.Release[:]), "%d.%d", &major, &minor)
	return major, minor
}

func versionAtLeast(v string, major, minor int) bool {
	var a, b int
	if _, err := fmt.Sscanf(strings.TrimPrefix(v, "v"), "%d.%d", &a, &b); err != nil {
		return false
	}
	return a > major || (a == major && b >= minor)
}

func executable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&0o111 != 0
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
