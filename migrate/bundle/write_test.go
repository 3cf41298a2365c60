package bundle

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Write refuses what a bundle cannot carry, naming the file, before it
// sends anything of it.
func TestWriteRefusesSpecialFiles(t *testing.T) {
	cases := map[string]struct {
		make func(t *testing.T, path string)
		want string
	}{
		"symlink": {func(t *testing.T, p string) {
			if err := os.Symlink("inventory.img", p); err != nil {
				t.Fatal(err)
			}
		}, "a symlink"},
		"dangling symlink": {func(t *testing.T, p string) {
			if err := os.Symlink("/nonexistent", p); err != nil {
				t.Fatal(err)
			}
		}, "a symlink"},
		"named pipe": {func(t *testing.T, p string) {
			if err := unix.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "a named pipe"},
		"socket": {func(t *testing.T, p string) {
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			l.SetUnlinkOnClose(false)
			l.Close()
		}, "a socket"},
		"character device": {func(t *testing.T, p string) {
			if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
				t.Fatal(err)
			}
		}, "a character device"},
		"setuid file": {func(t *testing.T, p string) {
			putFile(t, p, []byte("x"), 0o755)
			if err := os.Chmod(p, 0o755|os.ModeSetuid); err != nil {
				t.Fatal(err)
			}
		}, "set-id or sticky"},
		"manifest's name": {func(t *testing.T, p string) {
			// Reserved at the top only: sub/ may hold that name.
			putFile(t, filepath.Join(filepath.Dir(p), manifestName), []byte("{}"), 0o644)
			putFile(t, filepath.Join(filepath.Dir(p), "..", manifestName), []byte("{}"), 0o644)
		}, "reserved for the manifest"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			src := dumpDir(t, 4096)
			bad := filepath.Join(src, "sub", "zz-bad")
			c.make(t, bad)
			var b bytes.Buffer
			_, err := Write(context.Background(), &b, src)
			if err == nil {
				t.Fatal("write succeeded")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "zz-bad") && name != "manifest's name" {
				t.Errorf("error %q does not say %q about the file", err, c.want)
			}
			// Refused before anything was sent.
			if b.Len() != 0 {
				t.Errorf("%d bytes sent before refusing", b.Len())
			}
		})
	}
}

func TestWriteRefusesAMissingDir(t *testing.T) {
	var b bytes.Buffer
	_, err := Write(context.Background(), &b, filepath.Join(t.TempDir(), "absent"))
	if err == nil || !strings.Contains(err.Error(), "absent") {
		t.Fatalf("write of a missing dir: %v", err)
	}
	if b.Len() != 0 {
		t.Errorf("%d bytes sent", b.Len())
	}
}

// A symlink as the directory itself is followed: the caller named it.
// Inside it, symlinks are refused (above).
func TestWriteFollowsTheDirItself(t *testing.T) {
	src := dumpDir(t, 4096)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(src, link); err != nil {
		t.Fatal(err)
	}
	b := bundleBytes(t, link)
	dst := filepath.Join(t.TempDir(), "copy")
	if _, err := Read(context.Background(), bytes.NewReader(b), dst); err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, dst)
}
