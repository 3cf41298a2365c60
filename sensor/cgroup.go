package sensor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoCgroup2 means the host has no cgroup2 mount to resolve ids in.
var ErrNoCgroup2 = errors.New("sensor: no cgroup2 hierarchy mounted")

// UnifiedRoot returns the mount point of the cgroup2 hierarchy: /sys/fs/cgroup
// on pure v2 hosts, /sys/fs/cgroup/unified on hybrid ones (Debian 12 here).
// bpf_get_current_cgroup_id() reports a task's cgroup in this hierarchy.
func UnifiedRoot() (string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			found = append(found, fields[1])
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	for _, want := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		for _, m := range found {
			if m == want {
				return m, nil
			}
		}
	}
	if len(found) > 0 {
		return found[0], nil
	}
	return "", ErrNoCgroup2
}

// CgroupID returns the id the kernel reports for tasks in the cgroup2
// directory dir: the directory's inode number.
func CgroupID(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, fmt.Errorf("cgroup id of %s: not a directory", dir)
	}
	return st.Ino, nil
}

// CgroupDir joins a runtime cgroupsPath ("/escape/h1/<id>") to the cgroup2
// root. Paths in systemd's "slice:prefix:name" form are rejected: ESCAPE's
// runtime uses the cgroupfs driver.
func CgroupDir(root, cgroupsPath string) (string, error) {
	if cgroupsPath == "" || strings.Contains(cgroupsPath, ":") {
		return "", fmt.Errorf("cgroups path %q: want an absolute cgroupfs path", cgroupsPath)
	}
	clean := filepath.Clean("/" + cgroupsPath)
	return filepath.Join(root, clean), nil
}
