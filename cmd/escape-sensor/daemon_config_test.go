package main

import (
	"strings"
	"testing"

	"github.com/escape-mtd/escape/sensor/discovery"
)

// The namespaces to watch: the agent's own (its identity labels honoured)
// and the others, each once, the CRI plugin's marked; bad names refused.
func TestRunConfigNamespaces(t *testing.T) {
	c := runConfig{Host: "h1", Containerd: "/run/containerd/containerd.sock", Namespace: "escape",
		Namespaces: []string{"default", "escape", "k8s.io"}}
	got := c.endpoints()
	want := []discovery.Endpoint{
		{Host: "h1", Address: c.Containerd, Namespace: "escape", Own: true},
		{Host: "h1", Address: c.Containerd, Namespace: "default"},
		{Host: "h1", Address: c.Containerd, Namespace: "k8s.io", CRI: true},
	}
	if len(got) != len(want) {
		t.Fatalf("endpoints %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("endpoint %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if eps := (&runConfig{Namespace: "escape", Namespaces: []string{"k8s.io"}}).endpoints(); eps != nil {
		t.Errorf("no containerd socket, yet endpoints %+v", eps)
	}

	_, base, err := loadSensor(t, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		own  string
		more []string
		want string
	}{
		{"escape", []string{"default", "default"}, `"default" is listed twice`},
		{"escape", []string{""}, "namespaces (--namespaces)"},
		{"escape", []string{"bad/name"}, "namespaces (--namespaces) \"bad/name\""},
		{"-x", nil, "namespace (--namespace) \"-x\""},
		{"k8s.io", nil, "cannot be the agent's own"},
	} {
		c := base
		c.Namespace, c.Namespaces = tc.own, tc.more
		if err := c.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("namespace %q, namespaces %q: %v, want an error naming %q", tc.own, tc.more, err, tc.want)
		}
	}
	c = base
	c.Namespaces = []string{"default", "k8s.io", "escape"}
	if err := c.validate(); err != nil {
		t.Errorf("valid namespaces refused: %v", err)
	}
}
