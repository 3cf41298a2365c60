package lab

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestPlanAddressesAndLabels(t *testing.T) {
	inv, err := plan(newConfig([]Option{WithHosts(5), WithName("escapeunit")}))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{inv.Client.IP.String(): true, inv.Plane.IP.String(): true}
	if inv.Client.IP == inv.Plane.IP || !inv.Subnet.Contains(inv.Plane.IP) || inv.ServiceRange.Contains(inv.Plane.IP) {
		t.Errorf("plane address %s clashes or sits outside the fabric", inv.Plane.IP)
	}
	distinct := map[string]bool{}
	for _, h := range inv.Hosts {
		if !inv.Subnet.Contains(h.IP) {
			t.Errorf("host %s address %s outside %s", h.Name, h.IP, inv.Subnet)
		}
		if inv.ServiceRange.Contains(h.IP) {
			t.Errorf("host %s address %s inside the service range", h.Name, h.IP)
		}
		if seen[h.IP.String()] {
			t.Errorf("address %s used twice", h.IP)
		}
		seen[h.IP.String()] = true
		if !strings.HasPrefix(h.Netns, "escapeunit-") {
			t.Errorf("host netns %q lacks the lab prefix", h.Netns)
		}
		for _, k := range []string{"datacenter", "network", "config", "kernel", "runtime"} {
			if h.Labels[k] == "" {
				t.Errorf("host %s lacks label %s", h.Name, k)
			}
		}
		if h.MountNS != inv.RunDir+"/ns/"+h.Name || !strings.HasPrefix(h.Dir, inv.Root+"/hosts/"+h.Name) {
			t.Errorf("host %s mount namespace %q or directory %q is not its own", h.Name, h.MountNS, h.Dir)
		}
		if h.Agent != h.IP.String()+":7443" {
			t.Errorf("host %s agent address %q", h.Name, h.Agent)
		}
		distinct[h.Labels["datacenter"]+"/"+h.Labels["network"]+"/"+h.Labels["config"]] = true
	}
	if len(distinct) != len(inv.Hosts) {
		t.Errorf("hosts are not told apart by their labels: %d distinct label sets for %d hosts", len(distinct), len(inv.Hosts))
	}
	if got := inv.CgroupsPath("h2", "web"); got != "/escapeunit/h2/web" {
		t.Errorf("CgroupsPath = %q", got)
	}
	if inv.Root != "/var/lib/escapeunit-lab" || inv.RunDir != "/run/escapeunit-lab" {
		t.Errorf("directories %q %q not derived from the name", inv.Root, inv.RunDir)
	}
}

func TestPlanRejectsBadHostCounts(t *testing.T) {
	for _, n := range []int{0, -1, MaxHosts + 1} {
		if _, err := plan(newConfig([]Option{WithHosts(n)})); err == nil {
			t.Errorf("plan accepted %d hosts", n)
		}
	}
}

func TestParseInventoryRejectsGarbage(t *testing.T) {
	good, err := plan(newConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(good)
	if _, err := parseInventory("lab.json", data); err != nil {
		t.Fatalf("round trip of a planned inventory: %v", err)
	}
	cases := map[string]string{
		"empty":        ``,
		"not json":     `{"version":`,
		"old version":  `{"version":0,"hosts":[{"name":"h1"}]}`,
		"no hosts":     `{"version":1,"netns_prefix":"escape-","cgroup_parent":"escape","hosts":[]}`,
		"host no ip":   `{"version":1,"netns_prefix":"escape-","cgroup_parent":"escape","hosts":[{"name":"h1","netns":"n","containerd":"s"}]}`,
		"bad ip":       `{"version":1,"hosts":[{"name":"h1","ip":"300.1.1.1"}]}`,
		"no prefix":    `{"version":1,"hosts":[{"name":"h1","netns":"n","containerd":"s","ip":"198.18.0.11"}]}`,
		"wrong type":   `{"version":"1"}`,
		"array at top": `[]`,
	}
	for name, in := range cases {
		if _, err := parseInventory("lab.json", []byte(in)); err == nil {
			t.Errorf("%s: accepted %q", name, in)
		} else if !strings.Contains(err.Error(), "lab.json") {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/a/b`: "/a/b", `/a\040b`: "/a b", `/x\011y\134z`: "/x\ty\\z", `/bad\9`: `/bad\9`} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInLabCgroup(t *testing.T) {
	in := "12:pids:/escape/h1/web\n0::/escape/h1/web\n"
	if !inLabCgroup(in, "escape") {
		t.Error("container of the lab not recognised")
	}
	if inLabCgroup("0::/escape-other/h1\n1:name=systemd:/user.slice\n", "escape") {
		t.Error("a sibling subtree counted as the lab's")
	}
	if inLabCgroup("garbage", "escape") {
		t.Error("garbage counted as the lab's")
	}
}

func FuzzParseInventory(f *testing.F) {
	good, _ := plan(newConfig(nil))
	data, _ := json.Marshal(good)
	f.Add(data)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		inv, err := parseInventory("lab.json", b)
		if err == nil && (len(inv.Hosts) == 0 || inv.NetnsPrefix == "") {
			t.Fatalf("accepted an inventory without hosts or prefix: %q", b)
		}
	})
}
