package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/archive"
)

// Root filesystem changes. A container runs from a snapshot of its image,
// and what it writes there stays on the host it ran on: a copy restored
// elsewhere from the image alone would lose it, and CRIU fails to restore
// a file the container holds open there ("can't open file"; a size that
// differs, too). CheckpointOptions.RootFS therefore writes the changes
// into the dump as a tar of the difference between the image's file
// system and the container's (whiteouts for what was deleted), and a
// restore into a new container object applies it before the task starts.

// rootfsDiffName is the changes' file in a dump.
const rootfsDiffName = "rootfs-diff.tar"

// snapshotOf returns the snapshotter and the snapshot key of container id.
func snapshotOf(ctx context.Context, c *client.Client, id string) (snapshots.Snapshotter, string, error) {
	ct, err := c.LoadContainer(ctx, id)
	if err != nil {
		return nil, "", err
	}
	info, err := ct.Info(ctx)
	if err != nil {
		return nil, "", err
	}
	if info.SnapshotKey == "" {
		return nil, "", errors.New("the container has no snapshot")
	}
	return c.SnapshotService(info.Snapshotter), info.SnapshotKey, nil
}

// writeRootFSDiff writes to path the changes of container id's root
// filesystem against its image's. After a dump with exit nothing changes
// it any more; after one that leaves the container running it is what the
// container had written just after the dump.
func (n *Node) writeRootFSDiff(ctx context.Context, c *client.Client, id, path string) (err error) {
	// The view below is garbage until it is removed: a lease keeps
	// containerd's collector off it meanwhile.
	ctx, done, err := c.WithLease(ctx)
	if err != nil {
		return fmt.Errorf("root filesystem diff: %w", err)
	}
	defer func() { _ = done(context.WithoutCancel(ctx)) }()
	sn, key, err := snapshotOf(ctx, c, id)
	if err != nil {
		return fmt.Errorf("root filesystem diff: %w", err)
	}
	info, err := sn.Stat(ctx, key)
	if err != nil {
		return fmt.Errorf("root filesystem diff: %w", err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	viewKey := "escape-diff-" + id + "-" + hex.EncodeToString(b[:])
	lower, err := sn.View(ctx, viewKey, info.Parent)
	if err != nil {
		return fmt.Errorf("root filesystem diff: view of the image: %w", err)
	}
	defer func() { _ = sn.Remove(context.WithoutCancel(ctx), viewKey) }()
	upper, err := sn.Mounts(ctx, key)
	if err != nil {
		return fmt.Errorf("root filesystem diff: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("root filesystem diff: %w", err)
	}
	err = withMounted(ctx, lower, true, func(lowerRoot string) error {
		return withMounted(ctx, upper, true, func(upperRoot string) error {
			return archive.WriteDiff(ctx, f, lowerRoot, upperRoot)
		})
	})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("root filesystem diff: %w", err)
	}
	return nil
}

// applyRootFSDiff applies the root filesystem changes in the dump in dir,
// if it has any, to container id's root filesystem.
func (n *Node) applyRootFSDiff(ctx context.Context, c *client.Client, id, dir string) error {
	f, err := os.Open(filepath.Join(dir, rootfsDiffName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("root filesystem changes: %w", err)
	}
	defer f.Close()
	sn, key, err := snapshotOf(ctx, c, id)
	if err != nil {
		return fmt.Errorf("root filesystem changes: %w", err)
	}
	mounts, err := sn.Mounts(ctx, key)
	if err != nil {
		return fmt.Errorf("root filesystem changes: %w", err)
	}
	err = withMounted(ctx, mounts, false, func(root string) error {
		_, err := archive.Apply(ctx, root, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("root filesystem changes: apply: %w", err)
	}
	return nil
}

// withMounted runs fn on the file system of mounts. A snapshot already
// mounted (the root of a created task) is used where it is, since a second
// overlay on the same upper directory is undefined behaviour; a bind mount
// is its source; anything else is mounted in a temporary directory.
func withMounted(ctx context.Context, mounts []mount.Mount, readonly bool, fn func(root string) error) error {
	if len(mounts) == 1 {
		m := mounts[0]
		if m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind") {
			return fn(m.Source)
		}
		if m.Type == "overlay" {
			if mp, ok := overlayMountpoint(m.Options); ok {
				return fn(mp)
			}
		}
	}
	if readonly {
		return mount.WithReadonlyTempMount(ctx, mounts, fn)
	}
	return mount.WithTempMount(ctx, mounts, fn)
}

// overlayMountpoint finds where an overlay with the upper directory of
// opts is mounted already, from /proc/self/mountinfo.
func overlayMountpoint(opts []string) (string, bool) {
	var upper string
	for _, o := range opts {
		if strings.HasPrefix(o, "upperdir=") {
			upper = o
		}
	}
	if upper == "" {
		return "", false
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(mi), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 || g[0] != "overlay" {
			continue
		}
		if slices.Contains(strings.Split(g[2], ","), upper) {
			return f[4], true
		}
	}
	return "", false
}
