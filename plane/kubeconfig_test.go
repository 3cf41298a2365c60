package plane

import (
	"strings"
	"testing"
)

const kubeBase = `plane:
  service_range: 198.18.1.0/24
`

func TestKubernetesKey(t *testing.T) {
	cfg, err := ParseConfig(strings.NewReader(kubeBase + "  kubernetes:\n    enabled: true\n    node_selector: escape.mtd/agent=true\n"))
	if err != nil {
		t.Fatalf("kubernetes without hosts: %v", err)
	}
	k := cfg.Kubernetes
	if !k.Enabled || k.Namespace != "escape-system" || k.Lease != "escape-plane" || k.AgentPort != 7443 || k.NodeSelector != "escape.mtd/agent=true" {
		t.Errorf("kubernetes key with its defaults: %+v", k)
	}
	for name, c := range map[string]struct{ yaml, want string }{
		"no hosts, no kubernetes": {"", "at least one host"},
		"both": {"  hosts: [{name: h1, agent: '198.18.0.11:7443'}]\n  kubernetes: {enabled: true}\n",
			"must be empty with kubernetes.enabled"},
		"timings":             {"  kubernetes: {enabled: true, lease_duration: 5s, renew_deadline: 10s}\n", "lease_duration 5s > renew_deadline 10s"},
		"relative kubeconfig": {"  kubernetes: {enabled: true, kubeconfig: kube.conf}\n", "kubernetes.kubeconfig"},
		"lease name":          {"  kubernetes: {enabled: true, lease: Bad_Name}\n", "kubernetes.lease"},
		"port":                {"  kubernetes: {enabled: true, agent_port: 70000}\n", "kubernetes.agent_port"},
		"event rate":          {"  kubernetes: {enabled: true, events_per_second: 0}\n", "events_per_second"},
		"unknown key":         {"  kubernetes: {enabled: true, leader: x}\n", "leader"},
	} {
		_, err := ParseConfig(strings.NewReader(kubeBase + c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, c.want)
		}
	}
}
