package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// CRIU archives the content of every tmpfs in the container's mount
// namespace with `tar --gzip`, on dump and again on restore, and each archive
// costs a fork of CRIU, an exec of tar and one of gzip: 12 to 15 ms on the
// lab's hosts, all of it while the container is frozen. The default OCI spec
// has five such mounts (docs/plane.md, "Where the frozen time goes"). ESCAPE
// keeps the two whose content matters (/dev and /dev/shm) and removes the
// cost of the other three:
//   - /run is not mounted (oci.WithoutRunMount): it lives in the root
//     filesystem, as under Docker and Kubernetes;
//   - the directories runc masks with an empty read-only tmpfs have no
//     content to carry, so they are declared external to CRIU (maskConfig):
//     nothing is archived on dump, and on restore CRIU bind-mounts an empty
//     directory in their place with the mount's own read-only flags.

// maskedDirs are the entries of the default masked-path list (containerd's
// and runc's) that are directories whenever they exist, so runc masks them
// with a tmpfs. The file entries are masked with /dev/null, which runc
// already names to CRIU as external.
var maskedDirs = [...]string{"/proc/acpi", "/proc/asound", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}

// maskConfig returns the CRIU configuration lines that declare the masked
// directories external mounts, for dump and restore alike: on dump each
// mount point is saved under a key, and on restore the key resolves to
// emptyDir, an empty directory present on every host (on shared storage).
// A line whose mount point the container lacks is ignored by CRIU.
func maskConfig(emptyDir string) (string, error) {
	if !strings.HasPrefix(emptyDir, "/") || strings.ContainsAny(emptyDir, "\n\r \t[]:") {
		return "", fmt.Errorf("mask directory %q: want an absolute path without blanks, brackets or colons", emptyDir)
	}
	var b strings.Builder
	for i, d := range maskedDirs {
		key := fmt.Sprintf("escape-mask-%d", i)
		fmt.Fprintf(&b, "external mnt[%s]:%s\n", d, key)
		fmt.Fprintf(&b, "external mnt[%s]:%s\n", key, emptyDir)
	}
	return b.String(), nil
}

// prepareMaskDir makes dir the source maskConfig names: an empty tmpfs whose
// superblock is read-only. Read-only at the superblock, because a bind mount
// does not inherit a per-mount read-only flag and CRIU does not always carry
// one over (a container dumped again after a restore came back with its
// masks writable): with the superblock read-only, no bind of it can be
// written. dir must exist at the same path on every host (the lab's hosts
// share one). If dir already is such a mount it is reused and release does
// nothing; otherwise release unmounts it.
func prepareMaskDir(dir string) (release func() error, err error) {
	if _, err := maskConfig(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("mask directory: %w", err)
	}
	ro, mounted, err := readOnlyTmpfs(dir)
	if err != nil {
		return nil, err
	}
	release = func() error { return nil }
	if !mounted {
		if err := unix.Mount("escape-mask", dir, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=4k,mode=0555"); err != nil {
			return nil, fmt.Errorf("mount read-only tmpfs on mask directory %s: %w", dir, err)
		}
		release = func() error {
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount mask directory %s: %w", dir, err)
			}
			return nil
		}
	} else if !ro {
		return nil, fmt.Errorf("mask directory %s is a mount without a read-only tmpfs superblock", dir)
	}
	ents, err := os.ReadDir(dir)
	if err == nil && len(ents) > 0 {
		err = fmt.Errorf("not empty (%q)", ents[0].Name())
	}
	if err != nil {
		_ = release()
		return nil, fmt.Errorf("mask directory %s: %w", dir, err)
	}
	return release, nil
}

// readOnlyTmpfs reports whether dir is a mount point, and if so whether it
// is a tmpfs with a read-only superblock, from /proc/self/mountinfo.
func readOnlyTmpfs(dir string) (ro, mounted bool, err error) {
	dir = filepath.Clean(dir)
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, false, fmt.Errorf("mask directory: %w", err)
	}
	for _, line := range strings.Split(string(mi), "\n") {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 || f[4] != dir {
			continue
		}
		mounted = true // the last line for a path is the mount on top
		ro = g[0] == "tmpfs" && slices.Contains(strings.Split(g[2], ","), "ro")
	}
	return ro, mounted, nil
}

// unmountUnder detaches every mount at or below dir, deepest first. A CRIU
// killed in the middle of a restore leaves its cgroup yard mounted in its
// work directory, in the host's mount namespace.
func unmountUnder(dir string) error {
	dir = filepath.Clean(dir)
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("unmount under %s: %w", dir, err)
	}
	var points []string
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		if p := f[4]; p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	var errs []error
	for i := len(points) - 1; i >= 0; i-- {
		if err := unix.Unmount(points[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", points[i], err))
		}
	}
	return errors.Join(errs...)
}
