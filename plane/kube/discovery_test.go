package kube_test

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/plane/kube"
)

func hostNamed(p *plane.Plane, name string) (plane.HostConfig, bool) {
	for _, h := range p.Hosts() {
		if h.Name == name {
			return h, true
		}
	}
	return plane.HostConfig{}, false
}

// The plane's inventory follows the cluster's nodes: nodes created through
// the API become hosts with their agents and labels; a label change and a
// node deleted reach the running plane without a restart; nodes outside
// the selector stay out.
func TestDiscoveryFollowsTheNodes(t *testing.T) {
	_, cs := cluster(t)
	createNode(t, cs, "node-a", "198.18.0.11", map[string]string{"escape.mtd/agent": "true", "escape.mtd/network": "net1",
		"topology.kubernetes.io/zone": "dc1"})
	createNode(t, cs, "node-b", "198.18.0.12", map[string]string{"escape.mtd/agent": "true", "escape.mtd/network": "net2"})
	createNode(t, cs, "node-x", "198.18.0.13", nil) // no agent: not selected
	p := newPlane(t)
	if len(p.Hosts()) != 0 {
		t.Fatalf("hosts before discovery: %v", p.Hosts())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := kube.NewDiscovery(cs, p.SetHosts, kube.WithNodeSelector("escape.mtd/agent=true"), kube.WithAgentPort(7443))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatalf("discovery: %v", err)
	}
	hosts := p.Hosts()
	if len(hosts) != 2 || hosts[0].Name != "node-a" || hosts[1].Name != "node-b" {
		t.Fatalf("hosts after the first sync: %+v, want node-a and node-b", hosts)
	}
	a := hosts[0]
	if a.Agent != "198.18.0.11:7443" || a.Labels["network"] != "net1" || a.Labels["datacenter"] != "dc1" ||
		a.Labels["kernel"] != "6.1.0-test" || a.Labels["runtime"] != "containerd://2.1.0" {
		t.Errorf("node-a as a host: %+v", a)
	}
	if _, err := p.Host("node-a"); err != nil {
		t.Errorf("no agent link to node-a: %v", err)
	}

	// A label changes.
	n, err := cs.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Labels["escape.mtd/network"] = "net3"
	n.Labels["escape.mtd/kernel"] = "k7"
	if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "node-b's new labels", func() bool {
		h, ok := hostNamed(p, "node-b")
		return ok && h.Labels["network"] == "net3" && h.Labels["kernel"] == "k7"
	})

	// The agent moves (an annotation), then the node leaves.
	n, err = cs.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Annotations = map[string]string{kube.AgentAddressAnnotation: "198.18.0.21:7445"}
	if _, err := cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "node-a's agent at its annotation", func() bool {
		h, ok := hostNamed(p, "node-a")
		return ok && h.Agent == "198.18.0.21:7445"
	})
	if err := cs.CoreV1().Nodes().Delete(ctx, "node-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "node-a gone from the inventory", func() bool {
		_, ok := hostNamed(p, "node-a")
		return !ok
	})
	if _, err := p.Host("node-a"); err == nil {
		t.Error("the plane still has a link to the deleted node-a")
	}
	if _, err := p.Flag("node-a", true, "test", "test"); err == nil {
		t.Error("flagging the deleted node-a succeeded")
	}
	if _, err := p.Flag("node-b", true, "test", "test"); err != nil {
		t.Errorf("flag node-b: %v", err)
	}
}
