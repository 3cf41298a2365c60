package unixsock_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/escape-mtd/escape/internal/unixsock"
)

// accepted is what the server side learned about one connection.
type accepted struct {
	cred    unixsock.Cred
	credErr error
	rootErr error
}

// serveOne accepts one connection on l, reads its credentials, tells the
// client what RootOnly said, and reports.
func serveOne(l net.Listener) <-chan accepted {
	ch := make(chan accepted, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			ch <- accepted{credErr: err}
			return
		}
		defer c.Close()
		var a accepted
		a.cred, a.credErr = unixsock.PeerCred(c)
		a.rootErr = unixsock.RootOnly(c)
		if a.rootErr != nil {
			fmt.Fprintf(c, "refused: %v\n", a.rootErr)
		} else {
			fmt.Fprintln(c, "welcome")
		}
		ch <- a
	}()
	return ch
}

func TestPeerCredIsThisProcess(t *testing.T) {
	requireRoot(t)
	path := filepath.Join(t.TempDir(), "s.sock")
	l := mustListen(t, path)
	got := serveOne(l)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := <-got
	if a.credErr != nil {
		t.Fatal(a.credErr)
	}
	want := unixsock.Cred{PID: int32(os.Getpid()), UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	if a.cred != want {
		t.Errorf("PeerCred %+v, want %+v", a.cred, want)
	}
	if a.rootErr != nil {
		t.Errorf("RootOnly refused root: %v", a.rootErr)
	}
}

func TestPeerCredNeedsAUnixConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := unixsock.PeerCred(a); err == nil || !strings.Contains(err.Error(), "not a unix socket") {
		t.Errorf("PeerCred on a pipe: %v, want an error", err)
	}
	if err := unixsock.RootOnly(a); err == nil || errors.Is(err, unixsock.ErrNotRoot) {
		t.Errorf("RootOnly on a pipe: %v, want an error other than ErrNotRoot", err)
	}
}

// A child running as nobody connects to a socket open to all (0666):
// the kernel's credentials name it, and RootOnly refuses it.
func TestRootOnlyRefusesNonRootPeer(t *testing.T) {
	requireRoot(t)
	dir, exe := publicDir(t)
	path := filepath.Join(dir, "s.sock")
	l := mustListen(t, path, unixsock.WithMode(0o666))
	got := serveOne(l)
	var pid int
	out, err := child{mode: childConnect, path: path, uid: 65534, gid: 65534}.run(t, exe, func(p int) { pid = p })
	if err != nil {
		t.Fatalf("child: %v:\n%s", err, out)
	}
	a := <-got
	if a.credErr != nil {
		t.Fatal(a.credErr)
	}
	if want := (unixsock.Cred{PID: int32(pid), UID: 65534, GID: 65534}); a.cred != want {
		t.Errorf("PeerCred %+v, want %+v", a.cred, want)
	}
	if !errors.Is(a.rootErr, unixsock.ErrNotRoot) || !strings.Contains(a.rootErr.Error(), "uid=65534") {
		t.Errorf("RootOnly: %v, want ErrNotRoot naming uid 65534", a.rootErr)
	}
	if !strings.HasPrefix(out, "refused: permission denied: root only") {
		t.Errorf("child read %q, want the refusal", out)
	}
}

// With the default mode the kernel keeps a non-root process from even
// connecting.
func TestDefaultModeKeepsNonRootOut(t *testing.T) {
	requireRoot(t)
	dir, exe := publicDir(t)
	path := filepath.Join(dir, "s.sock")
	mustListen(t, path)
	out, err := child{mode: childConnect, path: path, uid: 65534, gid: 65534}.run(t, exe, nil)
	if err == nil || !strings.Contains(out, "connect error") || !strings.Contains(out, "permission denied") {
		t.Errorf("nobody connecting to a 0600 socket: %v %q, want permission denied", err, out)
	}
}

// WithGroup and 0660 admit the group and nobody else.
func TestWithGroupAdmitsThatGroupOnly(t *testing.T) {
	requireRoot(t)
	dir, exe := publicDir(t)
	path := filepath.Join(dir, "s.sock")
	l := mustListen(t, path, unixsock.WithMode(0o660), unixsock.WithGroup(65534))
	st := lstat(t, path)
	if st.Gid != 65534 || st.Uid != 0 || st.Mode&0o7777 != 0o660 {
		t.Fatalf("socket uid %d gid %d mode %#o, want root, 65534, 0660", st.Uid, st.Gid, st.Mode&0o7777)
	}
	got := serveOne(l)
	out, err := child{mode: childConnect, path: path, uid: 65534, gid: 65534}.run(t, exe, nil)
	if err != nil {
		t.Fatalf("a member of the group could not connect: %v:\n%s", err, out)
	}
	if a := <-got; a.cred.GID != 65534 {
		t.Errorf("peer gid %d, want 65534", a.cred.GID)
	}
	out, err = child{mode: childConnect, path: path, uid: 65534, gid: 12345}.run(t, exe, nil)
	if err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("someone outside the group connecting: %v %q, want permission denied", err, out)
	}
}
