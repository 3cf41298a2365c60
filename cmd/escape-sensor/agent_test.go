package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeAgentConfig(t *testing.T, listen string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "escape.yaml")
	if err := os.WriteFile(p, []byte("agent:\n  listen: \""+listen+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// listen: ${HOST_IP}:7443 takes the node's address from the environment,
// as the DaemonSet sets it (status.hostIP).
func TestAgentListenExpandsHostIP(t *testing.T) {
	for _, listen := range []string{"${HOST_IP}:7443", "$HOST_IP:7443"} {
		t.Setenv("HOST_IP", "198.51.100.11")
		a, err := loadAgentConfig(writeAgentConfig(t, listen))
		if err != nil {
			t.Fatalf("%s: %v", listen, err)
		}
		if a.Listen != "198.51.100.11:7443" || !a.enabled() {
			t.Errorf("%s: listen %q, want 198.51.100.11:7443", listen, a.Listen)
		}
	}
}

// Unset or empty, the variable is named in the error: the agent never
// falls back to ":7443" (every address).
func TestAgentListenRefusesUnsetVariable(t *testing.T) {
	path := writeAgentConfig(t, "${HOST_IP}:7443")
	t.Setenv("HOST_IP", "")
	if _, err := loadAgentConfig(path); err == nil || !strings.Contains(err.Error(), "HOST_IP is not set") {
		t.Errorf("empty HOST_IP: err %v, want one naming HOST_IP", err)
	}
	os.Unsetenv("HOST_IP")
	if _, err := loadAgentConfig(path); err == nil || !strings.Contains(err.Error(), "HOST_IP is not set") {
		t.Errorf("unset HOST_IP: err %v, want one naming HOST_IP", err)
	}
	// A value that is no address is refused by validate, as a literal is.
	t.Setenv("HOST_IP", "node-a")
	if _, err := loadAgentConfig(path); err == nil || !strings.Contains(err.Error(), "agent: listen") {
		t.Errorf("HOST_IP=node-a: err %v, want the listen address refused", err)
	}
}

// Only listen is expanded: a "$" elsewhere is taken as written.
func TestAgentOnlyListenIsExpanded(t *testing.T) {
	t.Setenv("HOST_IP", "198.51.100.11")
	p := filepath.Join(t.TempDir(), "escape.yaml")
	doc := "agent:\n  listen: 198.51.100.11:7443\n  state: /var/lib/$HOST_IP\n"
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := loadAgentConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if a.State != "/var/lib/$HOST_IP" || a.Listen != "198.51.100.11:7443" {
		t.Errorf("state %q listen %q: only listen may be expanded", a.State, a.Listen)
	}
}
