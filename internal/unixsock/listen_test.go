package unixsock_test

import (
	"bufio"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/escape-mtd/escape/internal/unixsock"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests bind root-only sockets and switch users: run them as root")
	}
}

func mustListen(t *testing.T, path string, opts ...unixsock.Option) net.Listener {
	t.Helper()
	l, err := unixsock.Listen(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func lstat(t *testing.T, path string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	return &st
}

func perm(t *testing.T, path string) os.FileMode {
	t.Helper()
	return os.FileMode(lstat(t, path).Mode & 0o7777)
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// roundTrip proves l serves path: a client connects to path and reads the
// line l's side writes. Connections the client did not make (Listen's
// probes of a live socket, closed at once) fail the write and are skipped.
func roundTrip(t *testing.T, l net.Listener, path string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				done <- err
				return
			}
			c.SetDeadline(time.Now().Add(10 * time.Second)) // against a hang, not a timing check
			_, err = c.Write([]byte("hi\n"))
			c.Close()
			if err == nil {
				done <- nil
				return
			}
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "hi\n" {
		t.Fatalf("read from %s: %q %v", path, line, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("accept on %s: %v", path, err)
	}
}

func readUmask() int {
	old := unix.Umask(0o022)
	unix.Umask(old)
	return old
}

func TestListenLeavesExistingParentMode(t *testing.T) {
	requireRoot(t)
	parent := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(parent, "x.sock")
	l := mustListen(t, path)
	if got := perm(t, parent); got != 0o755 {
		t.Errorf("existing parent's mode became %v, want it left at 0755", got)
	}
	st := lstat(t, path)
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Mode&0o7777 != 0o600 || st.Uid != 0 {
		t.Errorf("socket: type %#o mode %#o uid %d, want a socket, 0600, root's", st.Mode&unix.S_IFMT, st.Mode&0o7777, st.Uid)
	}
	if got := l.Addr().String(); got != path {
		t.Errorf("Addr %q, want %q", got, path)
	}
	roundTrip(t, l, path)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := perm(t, parent); got != 0o755 {
		t.Errorf("after Close the parent's mode is %v, want 0755", got)
	}
}

func TestListenCreatesMissingParents0700WhateverTheUmask(t *testing.T) {
	requireRoot(t)
	for _, mask := range []int{0o000, 0o022, 0o077, 0o777} {
		root := t.TempDir()
		rootMode := perm(t, root)
		path := filepath.Join(root, "a", "b", "s.sock")
		old := unix.Umask(mask)
		l, err := unixsock.Listen(path)
		unix.Umask(old)
		if err != nil {
			t.Fatalf("umask %#o: %v", mask, err)
		}
		for _, d := range []string{filepath.Join(root, "a"), filepath.Join(root, "a", "b")} {
			if got := perm(t, d); got != 0o700 {
				t.Errorf("umask %#o: created %s with mode %v, want 0700", mask, d, got)
			}
		}
		if got := perm(t, root); got != rootMode {
			t.Errorf("umask %#o: existing %s went from %v to %v", mask, root, rootMode, got)
		}
		if got := perm(t, path); got != 0o600 {
			t.Errorf("umask %#o: socket mode %v, want 0600", mask, got)
		}
		roundTrip(t, l, path)
		l.Close()
	}
}

func TestListenLeavesUmask(t *testing.T) {
	requireRoot(t)
	// A distinctive value, so that reading it back proves something.
	old := unix.Umask(0o027)
	defer unix.Umask(old)
	l := mustListen(t, filepath.Join(t.TempDir(), "d", "s.sock"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readUmask(); got != 0o027 {
		t.Errorf("umask after Listen and Close %#o, want 0027", got)
	}
}

// A restored umask is invisible afterwards, so the child runs Listen with
// umask(2) trapped by seccomp: any call at all crashes it.
func TestListenNeverCallsUmask(t *testing.T) {
	requireRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "d", "s.sock")
	out, err := child{mode: childUmaskTrapped, path: path}.run(t, exe, nil)
	if err == nil || !strings.Contains(out, "SIGSYS") {
		t.Fatalf("control: a trapped umask(2) should crash the child with SIGSYS; got %v:\n%s", err, out)
	}
	out, err = child{mode: childListenNoUmask, path: path}.run(t, exe, nil)
	if err != nil || strings.TrimSpace(out) != "ok" {
		t.Fatalf("Listen and Close with umask(2) trapped: %v:\n%s", err, out)
	}
}

func TestListenRefusesNonSocketsAndLeavesThem(t *testing.T) {
	requireRoot(t)
	cases := []struct {
		name, want string
		make       func(t *testing.T, path string)
		check      func(t *testing.T, path string)
	}{
		{"regular file", "a regular file is there",
			func(t *testing.T, path string) { os.WriteFile(path, []byte("keep me"), 0o644) },
			func(t *testing.T, path string) {
				if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
					t.Errorf("regular file now holds %q %v", b, err)
				}
			}},
		{"symlink", "a symbolic link is there",
			func(t *testing.T, path string) {
				os.WriteFile(path+".target", []byte("target"), 0o644)
				os.Symlink(path+".target", path)
			},
			func(t *testing.T, path string) {
				if dst, err := os.Readlink(path); err != nil || dst != path+".target" {
					t.Errorf("symlink now %q %v", dst, err)
				}
				if b, err := os.ReadFile(path + ".target"); err != nil || string(b) != "target" {
					t.Errorf("symlink target now holds %q %v", b, err)
				}
			}},
		{"dangling symlink", "a symbolic link is there",
			func(t *testing.T, path string) { os.Symlink("/nonexistent/escape", path) },
			func(t *testing.T, path string) {
				if dst, err := os.Readlink(path); err != nil || dst != "/nonexistent/escape" {
					t.Errorf("symlink now %q %v", dst, err)
				}
			}},
		{"directory", "a directory is there",
			func(t *testing.T, path string) {
				os.Mkdir(path, 0o755)
				os.WriteFile(filepath.Join(path, "inside"), []byte("x"), 0o644)
			},
			func(t *testing.T, path string) {
				if got := entries(t, path); !slices.Equal(got, []string{"inside"}) {
					t.Errorf("directory now holds %v", got)
				}
			}},
		{"fifo", "a named pipe (FIFO) is there",
			func(t *testing.T, path string) { unix.Mkfifo(path, 0o644) },
			func(t *testing.T, path string) {}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "s.sock")
			tc.make(t, path)
			before := lstat(t, path)
			beforeNames := entries(t, dir)
			l, err := unixsock.Listen(path)
			if err == nil {
				l.Close()
				t.Fatalf("Listen over %s succeeded", tc.name)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) || errors.Is(err, unixsock.ErrInUse) {
				t.Errorf("error %q, want it to say %q and name the path", err, tc.want)
			}
			after := lstat(t, path)
			if after.Ino != before.Ino || after.Mode != before.Mode {
				t.Errorf("%s replaced: inode %d mode %#o, was %d %#o", tc.name, after.Ino, after.Mode, before.Ino, before.Mode)
			}
			tc.check(t, path)
			if got := entries(t, dir); !slices.Equal(got, beforeNames) {
				t.Errorf("directory went from %v to %v", beforeNames, got)
			}
		})
	}
}

// deadSocket leaves a unix socket file at path that nobody listens on.
func deadSocket(t *testing.T, path string) uint64 {
	t.Helper()
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	return lstat(t, path).Ino
}

func TestListenReplacesDeadSocket(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	deadIno := deadSocket(t, path)
	l := mustListen(t, path)
	if ino := lstat(t, path).Ino; ino == deadIno {
		t.Errorf("the dead socket (inode %d) is still at the path", deadIno)
	}
	roundTrip(t, l, path)
	if got := entries(t, dir); !slices.Equal(got, []string{"s.sock"}) {
		t.Errorf("directory holds %v, want only s.sock", got)
	}
}

func TestListenRefusesLiveSocket(t *testing.T) {
	requireRoot(t)
	path := filepath.Join(t.TempDir(), "s.sock")
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ino := lstat(t, path).Ino
	l, err := unixsock.Listen(path)
	if err == nil {
		l.Close()
		t.Fatal("Listen over a live socket succeeded")
	}
	if !errors.Is(err, unixsock.ErrInUse) || !strings.Contains(err.Error(), "another process is listening") {
		t.Errorf("error %q, want ErrInUse", err)
	}
	if lstat(t, path).Ino != ino {
		t.Error("the live socket was replaced")
	}
	// Listen's probe is one connection the live listener sees, closed at
	// once; after it, the listener serves as before.
	probe, err := other.Accept()
	if err != nil {
		t.Fatal(err)
	}
	probe.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := probe.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("the probe connection read %d bytes, %v; want it closed", n, err)
	}
	probe.Close()
	roundTrip(t, other, path)
}

// A listener whose backlog is full refuses connections with EAGAIN, not
// ECONNREFUSED: it is still live.
func TestListenRefusesLiveSocketWithFullBacklog(t *testing.T) {
	requireRoot(t)
	path := filepath.Join(t.TempDir(), "s.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	full := false
	for i := 0; i < 64 && !full; i++ {
		c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(c)
		err = unix.Connect(c, &unix.SockaddrUnix{Name: path})
		full = errors.Is(err, unix.EAGAIN)
		if err != nil && !full {
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("could not fill the backlog")
	}
	if l, err := unixsock.Listen(path); !errors.Is(err, unixsock.ErrInUse) {
		if l != nil {
			l.Close()
		}
		t.Fatalf("Listen over a live socket with a full backlog: %v, want ErrInUse", err)
	}
}

func TestListenRefusesLiveDatagramSocket(t *testing.T) {
	requireRoot(t)
	path := filepath.Join(t.TempDir(), "s.sock")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ino := lstat(t, path).Ino
	if l, err := unixsock.Listen(path); err == nil || !strings.Contains(err.Error(), "datagram") {
		if l != nil {
			l.Close()
		}
		t.Fatalf("Listen over a bound datagram socket: %v, want it refused", err)
	}
	if lstat(t, path).Ino != ino {
		t.Error("the datagram socket was replaced")
	}
}

func TestCloseRemovesItsSocket(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	l, err := unixsock.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Close: %v, want the socket gone", err)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("directory holds %v after Close, want nothing", got)
	}
	if err := l.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

func TestCloseLeavesAFileThatReplacedItsSocket(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	l, err := unixsock.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".new", []byte("someone else's"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "someone else's" {
		t.Errorf("after Close the path holds %q %v, want the replacement intact", b, err)
	}
}

func TestListenWithMode(t *testing.T) {
	requireRoot(t)
	path := filepath.Join(t.TempDir(), "s.sock")
	mustListen(t, path, unixsock.WithMode(0o640))
	if got := perm(t, path); got != 0o640 {
		t.Errorf("mode %v, want 0640", got)
	}
}

// Of many concurrent Listen calls on one path exactly one wins, the
// others are told it is in use, whether the path starts empty or with a
// dead socket.
func TestConcurrentListenOneWins(t *testing.T) {
	requireRoot(t)
	const contenders = 16
	mask := readUmask()
	for round := 0; round < 300; round++ {
		dir := t.TempDir()
		path := filepath.Join(dir, "s.sock")
		if round%4 != 0 {
			deadSocket(t, path)
		}
		var (
			start   sync.WaitGroup
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []net.Listener
			errs    []error
		)
		start.Add(1)
		for i := 0; i < contenders; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start.Wait()
				l, err := unixsock.Listen(path)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				} else {
					winners = append(winners, l)
				}
			}()
		}
		start.Done()
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("round %d: %d winners, want 1 (errors %v)", round, len(winners), errs)
		}
		for _, err := range errs {
			if !errors.Is(err, unixsock.ErrInUse) {
				t.Errorf("round %d: a loser got %v, want ErrInUse", round, err)
			}
		}
		roundTrip(t, winners[0], path)
		winners[0].Close()
		if got := entries(t, dir); len(got) != 0 {
			t.Fatalf("round %d: directory holds %v after the winner closed", round, got)
		}
	}
	// Concurrent save-and-restore of the umask would leave it changed.
	if got := readUmask(); got != mask {
		t.Errorf("umask went from %#o to %#o", mask, got)
	}
}

func TestListenLongPath(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	base := strings.Repeat("s", unixsock.MaxPath-len(dir)-1)
	path := filepath.Join(dir, base)
	if len(path) != unixsock.MaxPath {
		t.Fatalf("test path is %d bytes", len(path))
	}
	l := mustListen(t, path)
	roundTrip(t, l, path)
	if _, err := unixsock.Listen(path + "x"); err == nil || !strings.Contains(err.Error(), "at most 107") {
		t.Errorf("a 108-byte path: %v, want it refused", err)
	}
}

func TestListenBadInput(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path string
		opts []unixsock.Option
		want string
	}{
		{"", nil, "empty path"},
		{"rel/s.sock", nil, "relative path"},
		{"/", nil, "root directory"},
		{filepath.Join(dir, "s.sock"), []unixsock.Option{unixsock.WithMode(os.ModeSetuid | 0o600)}, "beyond the permission bits"},
		{filepath.Join(dir, "s.sock"), []unixsock.Option{unixsock.WithGroup(-5)}, "negative"},
		{filepath.Join(file, "s.sock"), nil, "is not a directory"},
		{filepath.Join(file, "sub", "s.sock"), nil, "not a directory"},
	}
	for _, tc := range cases {
		l, err := unixsock.Listen(tc.path, tc.opts...)
		if err == nil {
			l.Close()
			t.Errorf("Listen(%q) succeeded", tc.path)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Listen(%q): %q, want it to say %q", tc.path, err, tc.want)
		}
	}
	if got := entries(t, dir); !slices.Equal(got, []string{"file"}) {
		t.Errorf("directory holds %v, want only the file", got)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Errorf("file holds %q", b)
	}
}
