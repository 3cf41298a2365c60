package sensor_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/escape-mtd/escape/sensor"
)

func TestCgroupDirBothDrivers(t *testing.T) {
	const root = "/sys/fs/cgroup/unified"
	const id = "3f1e9c0d2b7a"
	for in, want := range map[string]string{
		// cgroupfs: the kubelet's and ESCAPE's own.
		"/kubepods/burstable/pod1b2c3d4e-0000-4000-8000-000000000001/" + id: "/kubepods/burstable/pod1b2c3d4e-0000-4000-8000-000000000001/" + id,
		"/escape/h1/web":  "/escape/h1/web",
		"/escape//h1/./w": "/escape/h1/w",
		// systemd: the kubelet's three QoS classes, as containerd's CRI
		// writes them (the pod uid's dashes escaped to underscores).
		"kubepods-burstable-pod1b2c3d4e_0000_4000_8000_000000000001.slice:cri-containerd:" + id: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_4000_8000_000000000001.slice/cri-containerd-" + id + ".scope",
		"kubepods-besteffort-podu1.slice:cri-containerd:" + id:                                  "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podu1.slice/cri-containerd-" + id + ".scope",
		"kubepods-podu2.slice:cri-containerd:" + id:                                             "/kubepods.slice/kubepods-podu2.slice/cri-containerd-" + id + ".scope",
		// runc's rules: the default slice, the root slice, a slice as unit.
		"system.slice:docker:abc": "/system.slice/docker-abc.scope",
		":runc:abc":               "/system.slice/runc-abc.scope",
		"-.slice:p:abc":           "/p-abc.scope",
		"machine.slice::abc":      "/machine.slice/-abc.scope",
		"a-b.slice:p:c-d.slice":   "/a.slice/a-b.slice/c-d.slice",
	} {
		got, err := sensor.CgroupDir(root, in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if got != root+want {
			t.Errorf("%q: got %s, want %s", in, got, root+want)
		}
	}
}

func TestCgroupDirRefusesGarbage(t *testing.T) {
	for in, want := range map[string]string{
		"":                      "empty",
		"relative/path":         "absolute",
		"/":                     "root cgroup",
		"/escape/../../etc":     "leaves the hierarchy",
		"a:b":                   "3 fields",
		"a:b:c:d":               "3 fields",
		"kubepods.slice:p:":     "empty unit name",
		"kube/pods.slice:p:x":   "holds a path",
		"kubepods.slice:p/q:x":  "holds a path",
		"kubepods.slice:p:..":   "holds a path",
		"kubepods:p:x":          "must end in .slice",
		"kube--pods.slice:p:x":  "empty component",
		"-kubepods.slice:p:x":   "empty component",
		".slice:p:x":            "empty component",
		"/escape/h1/x\x00y":     "control characters",
		"kubepods.slice:p:x\ny": "control characters",
	} {
		_, err := sensor.CgroupDir("/sys/fs/cgroup", in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error saying %q", in, err, want)
		}
	}
}

func TestExpandSliceFollowsRunc(t *testing.T) {
	for in, want := range map[string]string{
		"-.slice":          "/",
		"system.slice":     "/system.slice",
		"test-a-b.slice":   "/test.slice/test-a.slice/test-a-b.slice",
		"kubepods.slice":   "/kubepods.slice",
		"user-1000.slice":  "/user.slice/user-1000.slice",
		"a_b-c_d.slice":    "/a_b.slice/a_b-c_d.slice",
		"x.y-z.slice":      "/x.y.slice/x.y-z.slice",
		"kubepods-x.slice": "/kubepods.slice/kubepods-x.slice",
	} {
		if got, err := sensor.ExpandSlice(in); err != nil || got != want {
			t.Errorf("ExpandSlice(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", ".slice", "a", "a.scope", "a--b.slice", "a-.slice", "a/b.slice", "--.slice"} {
		if got, err := sensor.ExpandSlice(in); err == nil {
			t.Errorf("ExpandSlice(%q) = %q, want an error", in, got)
		}
	}
}

func TestParseProcCgroup(t *testing.T) {
	hybrid := "12:pids:/escape/h1/w\n11:memory:/escape/h1/w\n1:name=systemd:/x\n0::/kubepods.slice/kubepods-podu.slice/cri-containerd-ab.scope\n"
	if got, err := sensor.ParseProcCgroup(hybrid); err != nil || got != "/kubepods.slice/kubepods-podu.slice/cri-containerd-ab.scope" {
		t.Errorf("hybrid: %q %v", got, err)
	}
	if got, err := sensor.ParseProcCgroup("0::/a:b/c\n"); err != nil || got != "/a:b/c" {
		t.Errorf("colon in the path: %q %v", got, err)
	}
	for in, want := range map[string]string{
		"":                          "no cgroup2",
		"3:cpu:/x\n":                "no cgroup2",
		"garbage\n":                 "want hierarchy",
		"0:/x\n":                    "want hierarchy",
		"0::relative\n":             "not a live absolute path",
		"0::/gone (deleted)\n":      "not a live absolute path",
		"0::/../../outside\n":       "outside this cgroup namespace",
		"0::/a\n0::/b\n":            "two cgroup2",
		"0::/a\n3:cpu\n":            "want hierarchy",
		"0::\n":                     "not a live absolute path",
		"0::/x\n4:cpu,cpuacct:/y\n": "",
	} {
		_, err := sensor.ParseProcCgroup(in)
		if want == "" {
			if err != nil {
				t.Errorf("%q: %v", in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error saying %q", in, err, want)
		}
	}
}

// Any cgroups path either resolves below the root, or is refused: nothing
// escapes the hierarchy and nothing panics.
func FuzzCgroupDir(f *testing.F) {
	for _, s := range []string{"/escape/h1/web", "kubepods-burstable-podu_1.slice:cri-containerd:abc", ":runc:x",
		"-.slice:p:x", "a--b.slice:p:x", "/../x", "a:b", "x.slice:p:..", "/kubepods/besteffort/podu/abc"} {
		f.Add(s)
	}
	const root = "/sys/fs/cgroup"
	f.Fuzz(func(t *testing.T, in string) {
		dir, err := sensor.CgroupDir(root, in)
		if err != nil {
			if dir != "" {
				t.Fatalf("%q: error %v with a path %q", in, err, dir)
			}
			return
		}
		rel, rerr := filepath.Rel(root, dir)
		if rerr != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || filepath.Clean(dir) != dir {
			t.Fatalf("%q resolved to %q, not a directory below %s", in, dir, root)
		}
	})
}

// Any /proc/<pid>/cgroup content yields one clean absolute path or an error.
func FuzzParseProcCgroup(f *testing.F) {
	for _, s := range []string{"0::/a/b\n", "12:pids:/x\n0::/y\n", "0::/a\n0::/b\n", "0::/x (deleted)\n", "x", "0::/../z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, err := sensor.ParseProcCgroup(in)
		if err != nil {
			return
		}
		if !strings.HasPrefix(p, "/") || filepath.Clean(p) != p || strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") {
			t.Fatalf("%q parsed to %q", in, p)
		}
	})
}
