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

// CgroupDir resolves an OCI spec's linux.cgroupsPath to its directory under
// the cgroup2 mount root, for either cgroup driver:
//   - cgroupfs: an absolute path, "/kubepods/burstable/pod<uid>/<id>" (the
//     kubelet's cgroupfs driver) or "/escape/h1/<id>" (ESCAPE's runtime);
//   - systemd: "slice:prefix:name", as the kubelet's systemd driver and
//     containerd's CRI write it ("kubepods-burstable-pod<uid>.slice:
//     cri-containerd:<id>"), which systemd places at the slice's expansion
//     followed by the unit: kubepods.slice/kubepods-burstable.slice/
//     kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope.
//
// It follows runc's rules (libcontainer/specconv and cgroups/systemd:
// ExpandSlice, getUnitName, getSliceFull) for system containers; a rootless
// systemd container (under user@<uid>.service) is not resolved. The path is
// only computed: the directory need not exist.
func CgroupDir(root, cgroupsPath string) (string, error) {
	rel, err := cgroupRel(cgroupsPath)
	if err != nil {
		return "", err
	}
	return filepath.Join(root, rel), nil
}

// cgroupRel is CgroupDir's path below the root, starting with "/".
func cgroupRel(cgroupsPath string) (string, error) {
	if cgroupsPath == "" {
		return "", errors.New("cgroups path: empty (the runtime chose one; resolve the task's pid instead)")
	}
	if strings.ContainsRune(cgroupsPath, 0) || strings.ContainsAny(cgroupsPath, "\n") {
		return "", fmt.Errorf("cgroups path %q: control characters", cgroupsPath)
	}
	if strings.Contains(cgroupsPath, ":") {
		return systemdRel(cgroupsPath)
	}
	if !strings.HasPrefix(cgroupsPath, "/") {
		// runc would put a relative path below its own cgroup: not one
		// this resolver can know.
		return "", fmt.Errorf("cgroups path %q: want an absolute cgroupfs path or systemd's slice:prefix:name", cgroupsPath)
	}
	for _, part := range strings.Split(cgroupsPath, "/") {
		if part == ".." {
			return "", fmt.Errorf("cgroups path %q: \"..\" leaves the hierarchy", cgroupsPath)
		}
	}
	clean := filepath.Clean(cgroupsPath)
	if clean == "/" {
		return "", fmt.Errorf("cgroups path %q: the root cgroup is no container's", cgroupsPath)
	}
	return clean, nil
}

// systemdRel expands "slice:prefix:name" as runc's systemd driver does:
// the parent slice (default system.slice) expanded by ExpandSlice, then
// the unit, "<prefix>-<name>.scope", or name itself when it is a slice.
func systemdRel(cgroupsPath string) (string, error) {
	parts := strings.Split(cgroupsPath, ":")
	if len(parts) != 3 {
		return "", fmt.Errorf("cgroups path %q: want systemd's \"slice:prefix:name\" (3 fields), got %d", cgroupsPath, len(parts))
	}
	slice, prefix, name := parts[0], parts[1], parts[2]
	if name == "" {
		return "", fmt.Errorf("cgroups path %q: empty unit name", cgroupsPath)
	}
	for _, p := range parts {
		if strings.ContainsRune(p, '/') || p == "." || p == ".." {
			return "", fmt.Errorf("cgroups path %q: a field holds a path (%q)", cgroupsPath, p)
		}
	}
	parent := "/system.slice"
	if slice != "" {
		var err error
		if parent, err = ExpandSlice(slice); err != nil {
			return "", fmt.Errorf("cgroups path %q: %w", cgroupsPath, err)
		}
	}
	unit := name // a slice as the unit goes under the parent as it is
	if !strings.HasSuffix(name, ".slice") {
		unit = prefix + "-" + name + ".scope"
	}
	return filepath.Join(parent, unit), nil
}

// ExpandSlice turns a systemd slice name into its cgroup path: systemd
// nests slices by their dashes, so "a-b-c.slice" is
// "/a.slice/a-b.slice/a-b-c.slice", and "-.slice" is the root "/".
// Empty components ("a--b.slice", "-a.slice") are invalid, as in runc.
func ExpandSlice(slice string) (string, error) {
	const suffix = ".slice"
	if len(slice) < len(suffix) || !strings.HasSuffix(slice, suffix) {
		return "", fmt.Errorf("slice %q: the name must end in .slice", slice)
	}
	if strings.Contains(slice, "/") {
		return "", fmt.Errorf("slice %q: holds a path separator", slice)
	}
	name := strings.TrimSuffix(slice, suffix)
	if name == "-" {
		return "/", nil
	}
	var path, prefix strings.Builder
	for _, component := range strings.Split(name, "-") {
		if component == "" {
			return "", fmt.Errorf("slice %q: empty component between dashes", slice)
		}
		path.WriteString("/" + prefix.String() + component + suffix)
		prefix.WriteString(component + "-")
	}
	return path.String(), nil
}

// CgroupDirOfPID returns the cgroup2 directory of process pid, from the
// "0::" line of /proc/<pid>/cgroup: where the kernel really counts its
// calls, whatever its spec said. The path is relative to the reader's
// cgroup namespace, so the sensor must run in the host's.
func CgroupDirOfPID(root string, pid int) (string, error) {
	if pid <= 0 {
		return "", fmt.Errorf("cgroup of pid %d: not a process id", pid)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("cgroup of pid %d: %w", pid, err)
	}
	rel, err := ParseProcCgroup(string(b))
	if err != nil {
		return "", fmt.Errorf("cgroup of pid %d: %w", pid, err)
	}
	return filepath.Join(root, rel), nil
}

// ParseProcCgroup returns the cgroup2 path in a /proc/<pid>/cgroup file:
// the path of its "0::" line ("hierarchy:controllers:path"; the path may
// itself hold colons).
func ParseProcCgroup(content string) (string, error) {
	found := ""
	for _, line := range strings.Split(content, "\n") {
		if line == "" {
			continue
		}
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			return "", fmt.Errorf("/proc cgroup line %q: want hierarchy:controllers:path", line)
		}
		controllers, path, ok := strings.Cut(rest, ":")
		if !ok {
			return "", fmt.Errorf("/proc cgroup line %q: want hierarchy:controllers:path", line)
		}
		if id != "0" || controllers != "" {
			continue // a cgroup v1 hierarchy
		}
		if found != "" {
			return "", errors.New("/proc cgroup: two cgroup2 (0::) lines")
		}
		if !strings.HasPrefix(path, "/") || strings.HasSuffix(path, " (deleted)") {
			return "", fmt.Errorf("/proc cgroup: cgroup2 path %q is not a live absolute path", path)
		}
		for _, part := range strings.Split(path, "/") {
			if part == ".." {
				// Outside the reader's cgroup namespace: the path names
				// nothing under this root.
				return "", fmt.Errorf("/proc cgroup: cgroup2 path %q is outside this cgroup namespace", path)
			}
		}
		found = filepath.Clean(path)
	}
	if found == "" {
		return "", errors.New("/proc cgroup: no cgroup2 (0::) line")
	}
	return found, nil
}
