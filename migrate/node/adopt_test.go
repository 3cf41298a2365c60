package node

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/escape-mtd/escape/migrate"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// userSpec is the spec ctr run gives a container by default, with its own
// named network namespace.
func userSpec(t testing.TB) *specs.Spec {
	t.Helper()
	s, err := oci.GenerateSpec(namespacesCtx(), nil, &containers.Container{ID: "db"},
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/run/netns/user-db"}))
	if err != nil {
		t.Fatal(err)
	}
	s.Process.Args = []string{"/usr/bin/redis-server"}
	return s
}

func namespacesCtx() context.Context {
	return namespaces.WithNamespace(context.Background(), "default")
}

func userInfo() containers.Container {
	return containers.Container{ID: "db", Image: "docker.io/library/redis:7", SnapshotKey: "db", Snapshotter: "overlayfs",
		Runtime: containers.RuntimeInfo{Name: "io.containerd.runc.v2"}}
}

func TestAssessSpec(t *testing.T) {
	for _, tc := range []struct {
		name     string
		change   func(*specs.Spec, *containers.Container)
		move, rb bool   // refused the move, refused the rollback
		want     string // in the reasons
	}{
		{name: "ctr's default spec", change: func(*specs.Spec, *containers.Container) {}},
		{name: "host bind mount", change: func(s *specs.Spec, _ *containers.Container) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: "/srv/data", Options: []string{"rbind", "ro"}})
		}, move: true, want: "bind mount of host path /srv/data at /data"},
		{name: "bind by option only", change: func(s *specs.Spec, _ *containers.Container) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "none", Source: "/srv/data", Options: []string{"bind"}})
		}, move: true, want: "bind mount of host path /srv/data"},
		{name: "nerdctl's resolv.conf", change: func(s *specs.Spec, _ *containers.Container) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: "/var/lib/nerdctl/1/resolv.conf", Options: []string{"bind"}})
		}, move: true, want: "runtime's /etc/resolv.conf"},
		{name: "an nfs volume", change: func(s *specs.Spec, _ *containers.Container) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "nfs", Source: "srv:/export"})
		}, move: true, want: `mount of type "nfs"`},
		{name: "a device", change: func(s *specs.Spec, _ *containers.Container) {
			s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229})
		}, move: true, want: "device /dev/fuse"},
		{name: "every device allowed", change: func(s *specs.Spec, _ *containers.Container) {
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "a", Access: "rwm"})
		}, move: true, want: "every device allowed"},
		{name: "privileged", change: func(s *specs.Spec, _ *containers.Container) {
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN")
		}, move: true, want: "privileged"},
		{name: "host PID namespace", change: func(s *specs.Spec, _ *containers.Container) {
			s.Linux.Namespaces = dropNS(s.Linux.Namespaces, specs.PIDNamespace)
		}, move: true, rb: true, want: "PID namespace"},
		{name: "another's PID namespace", change: func(s *specs.Spec, _ *containers.Container) {
			s.Linux.Namespaces = append(dropNS(s.Linux.Namespaces, specs.PIDNamespace), specs.LinuxNamespace{Type: specs.PIDNamespace, Path: "/proc/1/ns/pid"})
		}, move: true, rb: true, want: "PID namespace"},
		{name: "host IPC namespace", change: func(s *specs.Spec, _ *containers.Container) {
			s.Linux.Namespaces = dropNS(s.Linux.Namespaces, specs.IPCNamespace)
		}, move: true, want: "IPC namespace"},
		{name: "a terminal", change: func(s *specs.Spec, _ *containers.Container) { s.Process.Terminal = true },
			move: true, rb: true, want: "terminal"},
		{name: "another runtime", change: func(_ *specs.Spec, c *containers.Container) { c.Runtime.Name = "io.containerd.kata.v2" },
			move: true, rb: true, want: "kata"},
		{name: "a host path as root", change: func(_ *specs.Spec, c *containers.Container) { c.SnapshotKey = "" },
			move: true, want: "no containerd snapshot"},
		{name: "no linux section", change: func(s *specs.Spec, _ *containers.Container) { s.Linux = nil },
			move: true, rb: true, want: "no linux"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, info := userSpec(t), userInfo()
			tc.change(s, &info)
			move, rb := false, false
			var whys []string
			for _, r := range assessSpec(s, info) {
				move, rb = move || r.move, rb || r.rollback
				if r.why == "" {
					t.Error("a refusal without its reason")
				}
				whys = append(whys, r.why)
			}
			if move != tc.move || rb != tc.rb {
				t.Errorf("refused move %v, rollback %v; want %v, %v (%q)", move, rb, tc.move, tc.rb, whys)
			}
			if tc.want != "" && !strings.Contains(strings.Join(whys, "; "), tc.want) {
				t.Errorf("reasons %q lack %q", whys, tc.want)
			}
		})
	}
}

func dropNS(nss []specs.LinuxNamespace, typ specs.LinuxNamespaceType) []specs.LinuxNamespace {
	var out []specs.LinuxNamespace
	for _, ns := range nss {
		if ns.Type != typ {
			out = append(out, ns)
		}
	}
	return out
}

func TestMarkConflicts(t *testing.T) {
	spec := func(id, ns string) migrate.Spec {
		return migrate.Spec{ID: id, Adopted: &migrate.Adopted{Namespace: ns, Movable: true, Rollback: true}}
	}
	found := []migrate.Spec{spec("db", "default"), spec("db", "k8s.io"), spec("web", "default"), spec("api", "default")}
	markConflicts(found, map[string]bool{"api": true})
	for _, s := range found {
		clash := s.ID != "web"
		if clash == (s.Adopted.Movable || s.Adopted.Rollback) {
			t.Errorf("%s in %s: movable %v rollback %v, refusals %q", s.ID, s.Adopted.Namespace, s.Adopted.Movable, s.Adopted.Rollback, s.Adopted.Refusals)
		}
	}
	if r := strings.Join(found[0].Adopted.Refusals, ";"); !strings.Contains(r, "k8s.io") {
		t.Errorf("db in default names no other namespace: %q", r)
	}
	if r := strings.Join(found[3].Adopted.Refusals, ";"); !strings.Contains(r, "ESCAPE deployed") {
		t.Errorf("api names no deployed container: %q", r)
	}
}

func TestNodeConfigAdopt(t *testing.T) {
	base := Config{Name: "h1", Containerd: "/run/containerd/containerd.sock", Bridge: "br0", StateDir: "/var/lib/escape"}
	for _, tc := range []struct {
		adopt []string
		ok    bool
	}{
		{nil, true}, {[]string{"default", "k8s.io"}, true}, {[]string{"escape"}, false}, {[]string{"bad/ns"}, false},
		{[]string{"a", "b", "c", "d", "e", "f", "g", "h", "i"}, false},
	} {
		c := base
		c.Adopt = tc.adopt
		if err := c.validate(); (err == nil) != tc.ok {
			t.Errorf("adopt %v: %v, want ok %v", tc.adopt, err, tc.ok)
		}
	}
}

// FuzzAssessSpec: whatever OCI spec a containerd holds (the node decodes
// it from containerd's metadata), assessing it neither panics nor gives a
// refusal without its reason.
func FuzzAssessSpec(f *testing.F) {
	s := userSpec(f)
	b, _ := json.Marshal(s)
	f.Add(b)
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/d", Type: "bind", Source: "/x"})
	s.Linux.Resources = nil
	s.Process.Capabilities = nil
	b, _ = json.Marshal(s)
	f.Add(b)
	f.Add([]byte(`{"linux":{"namespaces":[{"type":"network","path":"/run/netns/../x"}]},"process":{},"root":{}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var spec specs.Spec
		if json.Unmarshal(data, &spec) != nil {
			return
		}
		for _, r := range assessSpec(&spec, userInfo()) {
			if r.why == "" || (!r.move && !r.rollback) {
				t.Fatalf("refusal %+v", r)
			}
		}
		if name, ok := migrate.NetnsName(netnsPath(&spec)); ok && (strings.Contains(name, "/") || name == ".." || name == ".") {
			t.Fatalf("netns %q from %q", name, netnsPath(&spec))
		}
	})
}
