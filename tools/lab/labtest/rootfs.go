package labtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/escape-mtd/escape/tools/lab"
)

// BusyboxRootFS copies the lab's busybox root to shared storage, which the
// hosts see at the same path, and removes it at cleanup. A container of a
// containerd namespace the lab imported no image into (nerdctl's default,
// the CRI's k8s.io) runs from it, read-only.
func BusyboxRootFS(t testing.TB, inv *lab.Inventory) string {
	t.Helper()
	dir, err := os.MkdirTemp(inv.Shared, "rootfs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if out, err := exec.Command("cp", "-a", inv.Images["busybox"].RootFS, filepath.Join(dir, "rootfs")).CombinedOutput(); err != nil {
		t.Fatalf("copy the busybox root: %v: %s", err, out)
	}
	return filepath.Join(dir, "rootfs")
}
