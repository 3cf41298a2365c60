package plane

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPlaneHoldsNoHostLocalCode proves from the build graph that the plane
// cannot touch a host: neither it nor its binary links containerd's
// client, netlink, the ARP code, CRIU, BPF or the node agent, and no
// production package depends on the lab. A host is only something the
// plane reaches over the network (plane/agentapi).
func TestPlaneHoldsNoHostLocalCode(t *testing.T) {
	hostLocal := []string{
		"github.com/containerd/containerd/v2/client",
		"github.com/vishvananda/netlink",
		"github.com/vishvananda/netns",
		"github.com/checkpoint-restore/go-criu",
		"github.com/cilium/ebpf",
		"github.com/escape-mtd/escape/arp",
		"github.com/escape-mtd/escape/migrate/node",
		"github.com/escape-mtd/escape/migrate/bundle",
		"github.com/escape-mtd/escape/bpf",
		"github.com/escape-mtd/escape/sensor/", // but sensor/events, the events' schema, below
		"github.com/escape-mtd/escape/tools/",
	}
	for _, pkg := range []string{"github.com/escape-mtd/escape/plane", "github.com/escape-mtd/escape/cmd/escape-plane"} {
		for _, dep := range deps(t, pkg) {
			if dep == "github.com/escape-mtd/escape/sensor/events" {
				continue
			}
			for _, bad := range hostLocal {
				if dep == "github.com/escape-mtd/escape/sensor" || dep == strings.TrimSuffix(bad, "/") || strings.HasPrefix(dep, bad) {
					t.Errorf("%s depends on %s: the plane must reach hosts only through their agents", pkg, dep)
				}
			}
		}
	}
	for _, pkg := range []string{"plane", "migrate", "sensor", "arp", "bags", "model"} {
		for _, dep := range deps(t, "github.com/escape-mtd/escape/"+pkg+"/...") {
			if strings.HasPrefix(dep, "github.com/escape-mtd/escape/tools/") {
				t.Errorf("production package %s depends on the lab's %s", pkg, dep)
			}
		}
	}
}

func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	list := strings.Fields(string(out))
	if len(list) < 10 {
		t.Fatalf("go list -deps %s listed only %v", pkg, list)
	}
	return list
}
