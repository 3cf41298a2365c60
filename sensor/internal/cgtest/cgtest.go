package cgtest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// SysExitGroup ends every child stream.
const SysExitGroup = 231

const (
	envChild  = "ESCAPE_CGTEST_CHILD"
	envThread = "ESCAPE_CGTEST_THREADS"
	envSeq    = "ESCAPE_CGTEST_SEQ"
	envRepeat = "ESCAPE_CGTEST_REPEAT"
	envSpin   = "ESCAPE_CGTEST_SPIN"
)

// Cgroup is a test cgroup2 directory (a threaded domain root holding the
// child process) with a threaded leaf that receives the locked thread.
type Cgroup struct {
	Dir, Leaf string
	LeafID    uint64 // what bpf_get_current_cgroup_id() returns in the leaf
}

// Root reports the cgroup2 mount, or skips when there is none or not root.
func Root(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel test: needs root to load BPF programs and create cgroups")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skip("kernel test: no kernel BTF (/sys/kernel/btf/vmlinux), tp_btf cannot attach")
	}
	for _, r := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var st unix.Statfs_t
		if unix.Statfs(r, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return r
		}
	}
	t.Skip("kernel test: no cgroup2 mount")
	return ""
}

// New creates the cgroup pair and removes it at cleanup.
func New(t testing.TB) *Cgroup {
	t.Helper()
	c := &Cgroup{Dir: Domain(t)}
	c.Leaf = filepath.Join(c.Dir, "t")
	must(t, os.Mkdir(c.Leaf, 0o755))
	t.Cleanup(func() { removeLater(t, c.Leaf) }) // runs before Domain's: the leaf goes first
	must(t, os.WriteFile(filepath.Join(c.Leaf, "cgroup.type"), []byte("threaded"), 0))
	var st unix.Stat_t
	must(t, unix.Stat(c.Leaf, &st))
	c.LeafID = st.Ino
	return c
}

// removeLater removes a cgroup directory: exited tasks leave it
// asynchronously, so it retries briefly.
func removeLater(t testing.TB, dir string) {
	for i := 0; i < 100; i++ {
		if err := os.Remove(dir); err == nil || os.IsNotExist(err) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("cgtest: cannot remove %s", dir)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Start runs the child: it issues seq (raw syscall numbers, zero arguments)
// repeat times in the leaf (repeat 0: until killed), then exit_group(0).
// Only harmless numbers belong in seq: getters, sched_yield, unknown ones.
func (c *Cgroup) Start(t testing.TB, seq []int, repeat int) *exec.Cmd {
	t.Helper()
	dir, err := os.Open(c.Dir)
	must(t, err)
	defer dir.Close()
	parts := make([]string, len(seq))
	for i, n := range seq {
		parts[i] = strconv.Itoa(n)
	}
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=1", envThread+"="+filepath.Join(c.Leaf, "cgroup.threads"),
		envSeq+"="+strings.Join(parts, ","), envRepeat+"="+strconv.Itoa(repeat),
		"GODEBUG=asyncpreemptoff=1", "GOMAXPROCS=1")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd()), Pdeathsig: syscall.SIGKILL}
	must(t, cmd.Start())
	return cmd
}

// Run starts the child and waits for it.
func (c *Cgroup) Run(t testing.TB, seq []int, repeat int) {
	t.Helper()
	if err := c.Start(t, seq, repeat).Wait(); err != nil {
		t.Fatalf("cgtest child: %v", err)
	}
}

// Stream is the leaf's exact stream for Run(seq, repeat).
func Stream(seq []int, repeat int) []int {
	var out []int
	for range repeat {
		out = append(out, seq...)
	}
	return append(out, SysExitGroup)
}

// Domain creates a plain cgroup2 directory and removes it at cleanup.
func Domain(t testing.TB) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	dir := filepath.Join(Root(t), "escape-test-"+hex.EncodeToString(b[:]))
	must(t, os.Mkdir(dir, 0o755))
	t.Cleanup(func() { removeLater(t, dir) })
	return dir
}

// Spin starts, in cgroup dir, a process whose threads (at least threads of
// them) call getppid every millisecond until it is killed; the process is
// killed at cleanup. It returns once the threads exist.
func Spin(t testing.TB, dir string, threads int) *exec.Cmd {
	t.Helper()
	fd, err := os.Open(dir)
	must(t, err)
	defer fd.Close()
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), envSpin+"="+strconv.Itoa(threads))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd()), Pdeathsig: syscall.SIGKILL}
	must(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); len(Threads(t, cmd.Process.Pid)) <= threads; {
		if time.Now().After(deadline) {
			t.Fatalf("cgtest: spinner %d never started %d threads", cmd.Process.Pid, threads)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cmd
}

// Threads lists the thread ids of process pid.
func Threads(t testing.TB, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	must(t, err)
	var out []int
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		must(t, err)
		out = append(out, tid)
	}
	return out
}

func spin(threads int) {
	for range threads {
		go func() {
			runtime.LockOSThread()
			for {
				syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	select {}
}

// MaybeChild must be called first in TestMain: in the child it runs the
// sequence and never returns.
func MaybeChild() {
	if n, err := strconv.Atoi(os.Getenv(envSpin)); err == nil {
		spin(n)
	}
	if os.Getenv(envChild) != "1" {
		return
	}
	runtime.LockOSThread()
	if err := child(); err != nil {
		fmt.Fprintln(os.Stderr, "cgtest child:", err)
		os.Exit(3)
	}
}

func child() error {
	var seq []uintptr
	for _, s := range strings.Split(os.Getenv(envSeq), ",") {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("sequence: %w", err)
		}
		seq = append(seq, uintptr(n))
	}
	repeat, err := strconv.Atoi(os.Getenv(envRepeat))
	if err != nil {
		return fmt.Errorf("repeat: %w", err)
	}
	fd, err := unix.Open(os.Getenv(envThread), unix.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open cgroup.threads: %w", err)
	}
	tid := []byte(strconv.Itoa(unix.Gettid()))
	// From the return of this write on, every call of this thread is in the
	// leaf: only raw syscalls follow, no allocation, no runtime call.
	p := &tid[0]
	if _, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafePointer(p)), uintptr(len(tid))); e != 0 {
		return fmt.Errorf("move thread: %w", e)
	}
	for i := 0; repeat == 0 || i < repeat; i++ {
		for _, nr := range seq {
			syscall.RawSyscall6(nr, 0, 0, 0, 0, 0, 0)
		}
	}
	syscall.RawSyscall(SysExitGroup, 0, 0, 0)
	return nil
}
