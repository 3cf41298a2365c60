package migrate

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func adoptedSpec() Spec {
	return Spec{ID: strings.Repeat("ab", 32), Image: "docker.io/library/redis:7", IP: netip.MustParsePrefix("198.18.1.200/15"),
		MAC: "02:e5:c6:12:01:c8", Adopted: &Adopted{Namespace: "default", OCISpec: json.RawMessage(`{"ociVersion":"1.2.1"}`),
			Netns: "/run/netns/user-db", Link: "eth0", Movable: true, Rollback: true}}
}

func TestAdoptedSpecValidate(t *testing.T) {
	if err := adoptedSpec().Validate(); err != nil {
		t.Fatalf("a nerdctl id (64 hex digits) adopted: %v", err)
	}
	id := strings.Repeat("ab", 32)
	for _, name := range []ImageName{CheckpointImage(id, 1, 2), MigrationImage(id, "20261203t101500.000000000")} {
		if err := name.Validate(); err != nil {
			t.Errorf("image of a 64-character id: %v", err)
		}
	}
	for name, tc := range map[string]struct {
		change func(*Spec)
		want   string
	}{
		"65 characters":          {func(s *Spec) { s.ID += "a" }, "invalid container id"},
		"namespace":              {func(s *Spec) { s.Adopted.Namespace = "a/b" }, "containerd namespace"},
		"spec too large":         {func(s *Spec) { s.Adopted.OCISpec = json.RawMessage(`"` + strings.Repeat("x", MaxAdoptedSpec) + `"`) }, "more than"},
		"spec not JSON":          {func(s *Spec) { s.Adopted.OCISpec = json.RawMessage(`{`) }, "not JSON"},
		"netns path":             {func(s *Spec) { s.Adopted.Netns = "/proc/1/ns/net" }, "want /run/netns/NAME"},
		"netns escape":           {func(s *Spec) { s.Adopted.Netns = "/run/netns/../../etc" }, "want /run/netns/NAME"},
		"link":                   {func(s *Spec) { s.Adopted.Link = "eth0 up" }, "interface name"},
		"movable, host network":  {func(s *Spec) { s.Adopted.Netns = "" }, "movable without"},
		"movable without an IP":  {func(s *Spec) { s.IP, s.MAC = netip.Prefix{}, "" }, "ip"},
		"too many refusals":      {func(s *Spec) { s.Adopted.Refusals = make([]string, 33) }, "at most 32"},
		"a refusal of 2 KiB":     {func(s *Spec) { s.Adopted.Refusals = []string{strings.Repeat("x", 2048)} }, "at most 1024"},
		"deployed without an IP": {func(s *Spec) { s.Adopted, s.IP = nil, netip.Prefix{} }, "ip"},
	} {
		s := adoptedSpec()
		a := *s.Adopted
		s.Adopted = &a
		tc.change(&s)
		if err := s.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, tc.want)
		}
	}
	// In place only, without an address: valid, and refused a migration.
	s := adoptedSpec()
	s.IP, s.MAC, s.Adopted.Netns, s.Adopted.Movable = netip.Prefix{}, "", "", false
	s.Adopted.Refusals = []string{"it shares the host's network namespace"}
	if err := s.Validate(); err != nil {
		t.Fatalf("a rollback-only adopted container without an address: %v", err)
	}
	if err := s.Movable(); err == nil || !strings.Contains(err.Error(), "host's network") {
		t.Fatalf("Movable: %v", err)
	}
	if !s.SharesHostNetwork() || adoptedSpec().SharesHostNetwork() {
		t.Error("SharesHostNetwork")
	}
}

func TestNetnsName(t *testing.T) {
	for path, want := range map[string]string{"/run/netns/x": "x", "/var/run/netns/cni-1": "cni-1", "/run/netns/": "",
		"/run/netns/..": "", "/run/netns/a/b": "", "/proc/1/ns/net": "", "": "", "/run/netns/a\x00": ""} {
		got, ok := NetnsName(path)
		if got != want || ok != (want != "") {
			t.Errorf("NetnsName(%q) = %q, %v; want %q", path, got, ok, want)
		}
	}
}

// FuzzAdopted: an adopted container's part of a spec, as the plane stores
// it and agents receive it, never panics validation, and a valid one names
// a netns that stays in /run/netns.
func FuzzAdopted(f *testing.F) {
	f.Add("default", []byte(`{"ociVersion":"1.2.1"}`), "/run/netns/user-db", "eth0", true)
	f.Add("k8s.io", []byte(`{`), "/run/netns/../x", "", false)
	f.Add("", []byte(nil), "/var/run/netns/cni-0", "veth@1", true)
	f.Fuzz(func(t *testing.T, ns string, spec []byte, netns, link string, movable bool) {
		a := &Adopted{Namespace: ns, OCISpec: spec, Netns: netns, Link: link, Movable: movable}
		if a.Validate() != nil {
			return
		}
		if netns != "" {
			name, ok := NetnsName(netns)
			if !ok || strings.ContainsAny(name, "/\x00") || name == ".." || name == "." {
				t.Fatalf("valid netns %q gives %q", netns, name)
			}
		}
		if len(spec) > MaxAdoptedSpec || (len(spec) > 0 && !json.Valid(spec)) {
			t.Fatalf("valid with an OCI spec of %d bytes", len(spec))
		}
	})
}
