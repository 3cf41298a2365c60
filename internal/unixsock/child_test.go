package unixsock_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/escape-mtd/escape/internal/unixsock"
)

// The test binary re-executed as a child does one of these, chosen by
// childEnv, on the path in pathEnv, and exits.
const (
	childEnv = "ESCAPE_UNIXSOCK_CHILD"
	pathEnv  = "ESCAPE_UNIXSOCK_PATH"

	// childConnect connects, prints the server's line (or the error).
	childConnect = "connect"
	// childListenNoUmask listens and closes with umask(2) trapped.
	childListenNoUmask = "listen-no-umask"
	// childUmaskTrapped calls umask(2) with it trapped: the control that
	// shows the trap fires.
	childUmaskTrapped = "umask-trapped"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode, os.Getenv(pathEnv)))
	}
	os.Exit(m.Run())
}

func runChild(mode, path string) int {
	switch mode {
	case childConnect:
		c, err := net.Dial("unix", path)
		if err != nil {
			fmt.Printf("connect error: %v\n", err)
			return 3
		}
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil && err != io.EOF {
			fmt.Printf("read error: %v\n", err)
			return 4
		}
		fmt.Print(line)
		return 0
	case childListenNoUmask, childUmaskTrapped:
		if err := trapSyscall(unix.SYS_UMASK); err != nil {
			fmt.Println(err)
			return 5
		}
		if mode == childUmaskTrapped {
			unix.Umask(0o022)
			fmt.Println("umask(2) returned: the trap did not fire")
			return 0
		}
		l, err := unixsock.Listen(path)
		if err != nil {
			fmt.Println(err)
			return 6
		}
		if err := l.Close(); err != nil {
			fmt.Println(err)
			return 7
		}
		fmt.Println("ok")
		return 0
	}
	fmt.Printf("unknown child mode %q\n", mode)
	return 2
}

// trapSyscall installs a seccomp filter, on every thread of the process,
// that raises SIGSYS (a Go crash with a traceback) on system call nr.
func trapSyscall(nr uint32) error {
	arch, ok := map[string]uint32{"amd64": unix.AUDIT_ARCH_X86_64, "arm64": unix.AUDIT_ARCH_AARCH64}[runtime.GOARCH]
	if !ok {
		return fmt.Errorf("no seccomp arch for %s", runtime.GOARCH)
	}
	const (
		ldAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret   = unix.BPF_RET | unix.BPF_K
	)
	// struct seccomp_data: nr at offset 0, arch at 4.
	prog := []unix.SockFilter{
		{Code: ldAbs, K: 4},
		{Code: jeq, K: arch, Jt: 0, Jf: 3},
		{Code: ldAbs, K: 0},
		{Code: jeq, K: nr, Jt: 0, Jf: 1},
		{Code: ret, K: unix.SECCOMP_RET_TRAP},
		{Code: ret, K: unix.SECCOMP_RET_ALLOW},
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		return fmt.Errorf("seccomp: %w", errno)
	}
	return nil
}

// child is a re-executed test binary.
type child struct {
	mode, path string
	// uid, gid to run as; 0 keeps root.
	uid, gid uint32
}

// run starts the child, calls started with its pid, and returns its
// output and exit error.
func (c child) run(t *testing.T, exe string, started func(pid int)) (string, error) {
	t.Helper()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+c.mode, pathEnv+"="+c.path)
	if c.uid != 0 || c.gid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: c.uid, Gid: c.gid}, // and no supplementary groups
		}
	}
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child %s: %v", c.mode, err)
	}
	if started != nil {
		started(cmd.Process.Pid)
	}
	err := cmd.Wait()
	return out.String(), err
}

// publicDir returns a directory every user can enter, holding a copy of
// the test binary every user can run (the build directory is root's).
func publicDir(t *testing.T) (dir, exe string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "escape-unixsock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe = filepath.Join(dir, "unixsock.test")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(exe, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return dir, exe
}
