package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMaskConfigPairsEachMaskWithTheEmptyDir(t *testing.T) {
	conf, err := maskConfig("/srv/escape/empty")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(conf), "\n")
	if len(lines) != 2*len(maskedDirs) {
		t.Fatalf("%d lines for %d masked directories:\n%s", len(lines), len(maskedDirs), conf)
	}
	for i, d := range maskedDirs {
		dump, restore := lines[2*i], lines[2*i+1]
		key := strings.TrimPrefix(dump, "external mnt["+d+"]:")
		if key == dump || key == "" || restore != "external mnt["+key+"]:/srv/escape/empty" {
			t.Fatalf("mask %s: dump line %q, restore line %q", d, dump, restore)
		}
	}
	// Anything CRIU's option syntax could misread is refused.
	for _, bad := range []string{"", "relative/dir", "/with space", "/a:b", "/a[b]", "/new\nline"} {
		if _, err := maskConfig(bad); err == nil {
			t.Errorf("maskConfig(%q) accepted", bad)
		}
	}
}

func TestPrepareMaskDirIsEmptyReadOnlyAndReused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("mounting a tmpfs needs root (CAP_SYS_ADMIN): run the tests as root")
	}
	dir := filepath.Join(t.TempDir(), "empty")
	release, err := prepareMaskDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = release() })
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o600); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write into the mask directory: %v, want EROFS", err)
	}
	// A bind of it, even one made read-write, stays read-only: the
	// superblock is.
	bind := filepath.Join(t.TempDir(), "bind")
	if err := os.Mkdir(bind, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dir, bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(bind, unix.MNT_DETACH) })
	if err := os.Mkdir(filepath.Join(bind, "d"), 0o700); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write through a bind: %v, want EROFS", err)
	}
	// Already there: reused, and the second release leaves it mounted.
	again, err := prepareMaskDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := again(); err != nil {
		t.Fatal(err)
	}
	if _, mounted, _ := readOnlyTmpfs(dir); !mounted {
		t.Fatal("releasing a reused mask directory unmounted it")
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if _, mounted, _ := readOnlyTmpfs(dir); mounted {
		t.Fatal("release left the mask directory mounted")
	}

	// A writable mount in its place is refused, not used.
	rw := filepath.Join(t.TempDir(), "rw")
	if err := os.Mkdir(rw, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("escape-test", rw, "tmpfs", 0, "size=4k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(rw, unix.MNT_DETACH) })
	if _, err := prepareMaskDir(rw); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("writable mount accepted: %v", err)
	}
}
