package kube

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/sensor/events"
)

func node(name string, labels, annotations map[string]string, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations},
		Status: corev1.NodeStatus{Addresses: addrs, NodeInfo: corev1.NodeSystemInfo{KernelVersion: "6.1", ContainerRuntimeVersion: "containerd://2.1"}}}
}

func TestHostOfMapsANode(t *testing.T) {
	n := node("n1", map[string]string{"escape.mtd/network": "net1", "escape.mtd/kernel": "k2", "kubernetes.io/hostname": "n1",
		"topology.kubernetes.io/zone": "z1", "escape.mtd/a/b": "nested"}, nil,
		corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.5"},
		corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "198.18.0.11"})
	h, err := HostOf(n, 7443)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"network": "net1", "kernel": "k2", "datacenter": "z1", "runtime": "containerd://2.1"}
	if h.Name != "n1" || h.Agent != "198.18.0.11:7443" || len(h.Labels) != len(want) {
		t.Fatalf("host %+v, want agent on the InternalIP and labels %v", h, want)
	}
	for k, v := range want {
		if h.Labels[k] != v {
			t.Errorf("label %s=%q, want %q", k, h.Labels[k], v)
		}
	}
	// The annotation overrides the address; an escape.mtd/datacenter label
	// overrides the zone.
	n.Annotations = map[string]string{AgentAddressAnnotation: "[fd00::1]:9443"}
	n.Labels["escape.mtd/datacenter"] = "dc7"
	if h, err = HostOf(n, 7443); err != nil || h.Agent != "[fd00::1]:9443" || h.Labels["datacenter"] != "dc7" {
		t.Errorf("with the annotation: %+v, %v", h, err)
	}
	// IPv6 InternalIP.
	v6 := node("n6", nil, nil, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "fd00::6"})
	if h, err := HostOf(v6, 7443); err != nil || h.Agent != "[fd00::6]:7443" {
		t.Errorf("IPv6 node: %+v, %v", h, err)
	}
}

func TestHostOfRefusesNodesWithoutAnAgent(t *testing.T) {
	for name, n := range map[string]*corev1.Node{
		"no address":         node("n1", nil, nil, corev1.NodeAddress{Type: corev1.NodeHostName, Address: "n1"}),
		"bad annotation":     node("n2", nil, map[string]string{AgentAddressAnnotation: "198.18.0.1"}),
		"garbage internalip": node("n3", nil, nil, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "not-an-ip"}),
	} {
		if h, err := HostOf(n, 7443); err == nil {
			t.Errorf("%s: mapped to %+v", name, h)
		} else if !strings.Contains(err.Error(), n.Name) {
			t.Errorf("%s: error %q does not name the node", name, err)
		}
	}
}

func TestInventoryLeavesOutWhatCannotBeAHost(t *testing.T) {
	ok := corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "198.18.0.12"}
	long := strings.Repeat("a", 70) // a valid node name, too long for an agent certificate's host name
	hosts, errs := Inventory([]*corev1.Node{node("b", nil, nil, ok), node(long, nil, nil, ok), node("a", nil, nil, ok), node("c", nil, nil)}, 7443)
	if len(hosts) != 2 || hosts[0].Name != "a" || hosts[1].Name != "b" {
		t.Errorf("hosts %+v, want a and b, sorted", hosts)
	}
	if len(errs) != 2 {
		t.Errorf("reasons %v, want 2 (the long name, c without address)", errs)
	}
}

func FuzzHostOf(f *testing.F) {
	f.Add("n1", "198.18.0.11", "", "escape.mtd/kernel", "k1")
	f.Add("n2", "", "198.18.0.2:7443", "escape.mtd/", "x")
	f.Add("N", "::1", "[::1]", "escape.mtd/a/b", "")
	f.Fuzz(func(t *testing.T, name, ip, annotation, key, value string) {
		n := node(name, map[string]string{key: value}, map[string]string{AgentAddressAnnotation: annotation},
			corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
		h, err := HostOf(n, 7443)
		if err != nil {
			return
		}
		if h.Name != name || h.Agent == "" {
			t.Fatalf("host %+v of node %q", h, name)
		}
		hosts, _ := Inventory([]*corev1.Node{n}, 7443)
		if len(hosts) == 1 && plane.ValidateHosts(hosts) != nil {
			t.Fatalf("Inventory kept an invalid host %+v", hosts[0])
		}
	})
}

func TestEventReason(t *testing.T) {
	for _, c := range []struct {
		ev      plane.AuditEvent
		reason  string
		warning bool
		ok      bool
	}{
		{plane.AuditEvent{Kind: "decision", Decision: "rollback", Outcome: "ok"}, "DecidedRollback", true, true},
		{plane.AuditEvent{Kind: "decision", Decision: "migrate", Outcome: "failed"}, "DecidedMigrate", true, true},
		{plane.AuditEvent{Kind: "decision", Decision: "replicate"}, "DecidedReplicate", true, true},
		{plane.AuditEvent{Kind: "decision", Decision: "none"}, "", false, false},
		{plane.AuditEvent{Kind: "decision", Decision: "skip"}, "", false, false},
		{plane.AuditEvent{Kind: "decision", Decision: "refuse", Action: "adopt"}, "RefusedAdopt", true, true},
		{plane.AuditEvent{Kind: "action", Action: "POST /v1/migrate", Outcome: "refused"}, "RefusedPOSTV1Migrate", true, true},
		{plane.AuditEvent{Kind: "action", Action: "rollback", Outcome: "ok"}, "RollbackDone", false, true},
		{plane.AuditEvent{Kind: "action", Action: "migrate", Outcome: "reverted"}, "MigrateReverted", true, true},
		{plane.AuditEvent{Kind: "action", Action: "checkpoint", Outcome: "ok"}, "", false, false},
		{plane.AuditEvent{Kind: "report"}, "", false, false},
	} {
		r, w, ok := EventReason(c.ev)
		if r != c.reason || w != c.warning || ok != c.ok {
			t.Errorf("%+v: %q %v %v, want %q %v %v", c.ev, r, w, ok, c.reason, c.warning, c.ok)
		}
	}
}

func TestNewEventBoundsItsFields(t *testing.T) {
	pod := events.Pod{Namespace: "shop", Name: strings.Repeat("p", 250) + "-", UID: "u1"}
	e := NewEvent(plane.AuditEvent{Kind: "decision", Decision: "rollback", Container: "c1", Host: "h1",
		Reasons: []string{strings.Repeat("r", 2000)}}, pod, "DecidedRollback", true, "plane-0")
	if len(e.Note) > maxNote || !strings.HasPrefix(e.Note, "container c1 on h1") {
		t.Errorf("note of %d bytes: %.40q", len(e.Note), e.Note)
	}
	if len(e.GenerateName) > 215 || strings.Contains(e.GenerateName, "-.") || e.Namespace != "shop" ||
		e.Regarding.Name != pod.Name || string(e.Regarding.UID) != "u1" || e.Type != "Warning" || e.Action != "Rollback" {
		t.Errorf("event %+v", e.ObjectMeta)
	}
}

// The recorder never blocks nor grows: over its rate, and with nobody
// posting, what exceeds the burst and the queue is dropped and counted.
func TestRecorderDropsPastItsBudget(t *testing.T) {
	r := NewRecorder(nil, "plane-0", WithRate(1000, 500))
	r.Attach(func(id string) (events.Pod, bool) { return events.Pod{Namespace: "ns", Name: "p-" + id}, id != "bare" })
	ev := plane.AuditEvent{Kind: "decision", Decision: "rollback", Container: "c1"}
	for range 400 {
		r.Sink(ev)
	}
	if len(r.queue) != queueSize || r.Dropped() != 400-queueSize {
		t.Errorf("queued %d, dropped %d; want %d and %d", len(r.queue), r.Dropped(), queueSize, 400-queueSize)
	}
	before := r.Dropped()
	r.Sink(plane.AuditEvent{Kind: "decision", Decision: "rollback", Container: "bare"}) // no pod: no Event at all
	r.Sink(plane.AuditEvent{Kind: "report", Container: "c1"})                           // not a decision
	if r.Dropped() != before {
		t.Error("events without a pod or not worth an Event were counted as dropped")
	}
	slow := NewRecorder(nil, "plane-0", WithRate(0.001, 3))
	slow.Attach(func(string) (events.Pod, bool) { return events.Pod{Namespace: "ns", Name: "p"}, true })
	for range 10 {
		slow.Sink(ev)
	}
	if len(slow.queue) != 3 || slow.Dropped() != 7 {
		t.Errorf("rate-limited: queued %d, dropped %d; want 3 and 7", len(slow.queue), slow.Dropped())
	}
}
