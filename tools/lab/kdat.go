package lab

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// kdatCache is where CRIU, run as root, looks for its cache of kernel
// features. Probing them takes ~80 ms per CRIU call on the lab machines,
// and a restore pays it inside the container's frozen window.
const kdatCache = "/run/criu.kdat"

// seedKdat gives CRIU its kernel-feature cache inside host's own /run.
// CRIU writes the cache only on a tmpfs (so that a reboot, perhaps into
// another kernel, clears it); every lab host's /run is one, so one `criu
// check` there computes it once per up instead of in the first restore's
// frozen window. It dies with the host's /run at down.
func seedKdat(ctx context.Context, inv *Inventory, h Host) error {
	if out, err := Command(ctx, inv, h.Name, h.CRIU, "check").CombinedOutput(); err != nil {
		// criu check fails on missing optional features; the cache is what counts.
		if out2, err2 := Command(ctx, inv, h.Name, "test", "-s", kdatCache).CombinedOutput(); err2 != nil {
			return fmt.Errorf("seed criu kdat cache on %s: criu check: %v: %s%s", h.Name, err, out, out2)
		}
	}
	if out, err := Command(ctx, inv, h.Name, "test", "-s", kdatCache).CombinedOutput(); err != nil {
		return fmt.Errorf("seed criu kdat cache on %s: no %s after criu check: %v %s", h.Name, kdatCache, err, out)
	}
	return nil
}

// removeOldKdat removes the cache that labs before mount namespaces seeded
// in the root namespace's /run. Where /run is not a tmpfs CRIU never writes
// it there itself, so any file there is a lab's, and a stale one (from
// another kernel) must not outlive the lab.
func removeOldKdat() error {
	var s unix.Statfs_t
	if unix.Statfs("/run", &s) == nil && s.Type == unix.TMPFS_MAGIC {
		return nil
	}
	if err := os.Remove(kdatCache); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the old criu kdat cache: %w", err)
	}
	return nil
}
