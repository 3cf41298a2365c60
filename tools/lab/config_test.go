package lab

import (
	"bytes"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/plane"
)

func plannedWithTLS(t *testing.T, opts ...Option) *Inventory {
	t.Helper()
	inv, err := plan(newConfig(append([]Option{WithName("escapeunit")}, opts...)))
	if err != nil {
		t.Fatal(err)
	}
	inv.Plane.TLS = mtls.IssuedFiles(inv.Plane.Dir+"/etc/pki", "plane")
	for i := range inv.Hosts {
		inv.Hosts[i].TLS = mtls.IssuedFiles(inv.Hosts[i].Dir+"/etc/pki", "agent")
	}
	return inv
}

// The plane's base configuration is written so that the plane loads it:
// every host with its agent and labels, paths inside the plane namespace.
func TestPlaneConfigLoadsBack(t *testing.T) {
	inv := plannedWithTLS(t, WithHosts(4))
	cfg, err := inv.PlaneConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Containers = append(cfg.Containers, plane.ContainerConfig{ID: "web", Image: ImageRef("redis")})
	data, err := MarshalPlaneConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := plane.ParseConfig(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("parse back: %v\n%s", err, data)
	}
	if len(got.Hosts) != 4 || got.Hosts[2].Agent != "198.18.0.13:7443" || got.Hosts[2].Labels["datacenter"] == "" {
		t.Errorf("hosts did not survive: %+v", got.Hosts)
	}
	if got.API != "198.18.0.3:7444" || got.TLS.Cert != "/etc/escape/pki/plane.crt" || got.State != "/var/lib/escape/plane.db" {
		t.Errorf("plane settings: api %q cert %q state %q", got.API, got.TLS.Cert, got.State)
	}
	if len(got.Containers) != 1 || got.Containers[0].ID != "web" {
		t.Errorf("containers: %+v", got.Containers)
	}
	if strings.Contains(string(data), inv.Root) {
		t.Errorf("the plane's config names the lab's directory, which the plane cannot see:\n%s", data)
	}
}

func TestAgentConfigFile(t *testing.T) {
	inv := plannedWithTLS(t, WithHosts(2))
	extra := []byte("sensor:\n  threshold: 7\nagent:\n  runc_root: /run/other\n")
	data, err := agentConfigFile(inv, inv.Hosts[1], extra)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Sensor map[string]any `yaml:"sensor"`
		Agent  map[string]any `yaml:"agent"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"host": "h2", "containerd": InsideContainerd, "threshold": 7}
	for k, v := range want {
		if doc.Sensor[k] != v {
			t.Errorf("sensor %s = %v, want %v", k, doc.Sensor[k], v)
		}
	}
	if doc.Agent["listen"] != "198.18.0.12:7443" || doc.Agent["cgroup_parent"] != "escapeunit/h2" ||
		doc.Agent["shared"] != inv.Shared || doc.Agent["runc_root"] != "/run/other" || doc.Agent["netns"] != "" {
		t.Errorf("agent section: %v", doc.Agent)
	}
	if tls, _ := doc.Agent["tls"].(map[string]any); tls["cert"] != "/etc/escape/pki/agent.crt" {
		t.Errorf("agent tls: %v", doc.Agent["tls"])
	}
	if _, err := agentConfigFile(inv, inv.Hosts[0], []byte("plane:\n  api: x\n")); err == nil {
		t.Error("settings for an unknown section accepted")
	}
	inv.SharedStorage = false
	data, _ = agentConfigFile(inv, inv.Hosts[0], nil)
	if strings.Contains(string(data), "shared:") {
		t.Errorf("shared storage off, yet the agent is told of it:\n%s", data)
	}
}

func TestCommandNamespaces(t *testing.T) {
	inv := plannedWithTLS(t, WithHosts(2))
	for where, want := range map[string]string{
		"h2":     "nsenter --mount=" + inv.RunDir + "/ns/h2 --net=/run/netns/escapeunit-h2 -- id",
		"plane":  "nsenter --mount=" + inv.RunDir + "/ns/plane --net=/run/netns/escapeunit-plane -- id",
		"client": "nsenter --net=/run/netns/escapeunit-client -- id",
	} {
		cmd := Command(t.Context(), inv, where, "id")
		if got := strings.Join(cmd.Args, " "); got != want || cmd.Err != nil {
			t.Errorf("%s: %q (%v), want %q", where, got, cmd.Err, want)
		}
	}
	if err := Command(t.Context(), inv, "h9", "id").Run(); err == nil || !strings.Contains(err.Error(), "h9") {
		t.Errorf("unknown machine: %v", err)
	}
}
