package cgtest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Tree creates the cgroup2 directories of rel (a path such as
// /kubepods.slice/kubepods-burstable.slice/...) below root, each level
// that is missing, and removes at cleanup exactly the levels it created,
// deepest first: a level that existed, or that holds another's cgroup, is
// left alone. It returns the deepest directory.
func Tree(t testing.TB, root, rel string) string {
	t.Helper()
	dir := root
	var made []string
	for _, part := range strings.Split(strings.Trim(rel, "/"), "/") {
		if part == "" || part == "." || part == ".." {
			t.Fatalf("cgtest: tree %q: bad component %q", rel, part)
		}
		dir = filepath.Join(dir, part)
		err := os.Mkdir(dir, 0o755)
		switch {
		case err == nil:
			made = append(made, dir)
		case errors.Is(err, os.ErrExist):
		default:
			t.Fatalf("cgtest: tree %q: %v", rel, err)
		}
	}
	t.Cleanup(func() {
		for i := len(made) - 1; i >= 0; i-- {
			removeLater(t, made[i])
		}
	})
	return dir
}

// RandomHex returns n random bytes in hex: container ids, pod uids.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// RemoveEverywhere removes the cgroup directories rels (paths below a
// hierarchy's root, listed deepest first) from every cgroup hierarchy
// mounted, v1 and v2: runc's cgroupfs driver on a hybrid host makes a
// container's directories in each, and leaves some behind. Directories
// that do not exist are skipped.
func RemoveEverywhere(t testing.TB, rels []string) {
	t.Helper()
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Errorf("cgtest: %v", err)
		return
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || (f[2] != "cgroup" && f[2] != "cgroup2") {
			continue
		}
		for _, rel := range rels {
			dir := filepath.Join(f[1], filepath.Clean("/"+rel))
			if dir == f[1] {
				continue
			}
			if _, err := os.Stat(dir); err == nil {
				removeLater(t, dir)
			}
		}
	}
}
