package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/escape-mtd/escape/internal/atomicfile"
)

// kdatCache is where CRIU, run as root, looks for its cache of kernel
// features. Probing them takes ~80 ms per CRIU call on the lab machines,
// and a restore pays it inside the container's frozen window.
const kdatCache = "/run/criu.kdat"

// seedKdat gives CRIU its kernel-feature cache on hosts whose /run is not a
// tmpfs. CRIU only ever writes the cache on a tmpfs, so that a reboot (into
// another kernel, perhaps) clears it; on such hosts (systemd mounts /run as
// a tmpfs) it needs no help. Elsewhere, as on these VMs, every CRIU call
// probes the kernel again. The lab computes the cache once per `up` with a
// private tmpfs over /run and installs it; down removes it, so a stale
// cache cannot outlive the lab. CRIU reads the file without the tmpfs check.
func seedKdat(ctx context.Context, prefix string) error {
	if onTmpfs("/run") {
		return nil
	}
	criu := filepath.Join(prefix, "bin", "criu")
	// unshare makes the new mount namespace private: the tmpfs is seen by
	// this one criu check only, never by the host.
	script := `mount -t tmpfs escape-kdat /run && "$0" check >/dev/null 2>&1; cat /run/criu.kdat`
	out, err := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", script, criu).Output()
	if err != nil {
		return fmt.Errorf("seed criu kdat cache: %w", err)
	}
	if len(out) == 0 {
		return errors.New("seed criu kdat cache: criu check wrote no cache")
	}
	if err := atomicfile.WriteFile(kdatCache, out, 0o600); err != nil {
		return fmt.Errorf("seed criu kdat cache: %w", err)
	}
	return nil
}

// removeKdat undoes seedKdat (a tmpfs /run holds CRIU's own cache: left alone).
func removeKdat() error {
	if onTmpfs("/run") {
		return nil
	}
	if err := os.Remove(kdatCache); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove criu kdat cache: %w", err)
	}
	return nil
}

func onTmpfs(dir string) bool {
	var s unix.Statfs_t
	return unix.Statfs(dir, &s) == nil && s.Type == unix.TMPFS_MAGIC
}
