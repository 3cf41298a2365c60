package lab

import (
	"github.com/escape-mtd/escape/arp"

	"context"
	"fmt"
	"os"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// HostStatus is the observed state of one lab host.
type HostStatus struct {
	Name       string `json:"name"`
	Netns      bool   `json:"netns"`
	Containerd string `json:"containerd_version,omitempty"`
	Containers int    `json:"containers"`
	Problem    string `json:"problem,omitempty"`
}

// Status is the observed state of the lab.
type Status struct {
	Up        bool         `json:"up"`
	Inventory *Inventory   `json:"inventory,omitempty"`
	Hosts     []HostStatus `json:"hosts,omitempty"`
	Problem   string       `json:"problem,omitempty"`
}

// Healthy reports whether the lab is up and every host answers.
func (s Status) Healthy() bool {
	if !s.Up || s.Problem != "" {
		return false
	}
	for _, h := range s.Hosts {
		if h.Problem != "" {
			return false
		}
	}
	return true
}

// GetStatus inspects the lab: each host's namespace and containerd.
func GetStatus(ctx context.Context, opts ...Option) Status {
	c := newConfig(opts)
	inv, err := LoadInventory(ctx, c.root)
	if err != nil {
		return Status{Problem: err.Error()}
	}
	return status(ctx, inv)
}

func status(ctx context.Context, inv *Inventory) Status {
	st := Status{Up: true, Inventory: inv}
	if _, err := os.Stat(arp.NetnsPath(inv.Fabric.Netns)); err != nil {
		st.Problem = "fabric namespace missing"
	}
	for _, h := range inv.Hosts {
		hs := HostStatus{Name: h.Name}
		if _, err := os.Stat(arp.NetnsPath(h.Netns)); err == nil {
			hs.Netns = true
		} else {
			hs.Problem = "network namespace " + h.Netns + " missing"
		}
		v, n, err := containerdInfo(ctx, h.Containerd, inv.Namespace)
		if err != nil {
			if hs.Problem == "" {
				hs.Problem = "containerd not answering: " + err.Error()
			}
		} else {
			hs.Containerd, hs.Containers = v, n
		}
		st.Hosts = append(st.Hosts, hs)
	}
	return st
}

func containerdInfo(ctx context.Context, socket, ns string) (string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := containerd.New(socket, containerd.WithTimeout(time.Second))
	if err != nil {
		return "", 0, err
	}
	defer c.Close()
	v, err := c.Version(ctx)
	if err != nil {
		return "", 0, err
	}
	ctrs, err := c.Containers(namespaces.WithNamespace(ctx, ns))
	if err != nil {
		return "", 0, fmt.Errorf("list containers: %w", err)
	}
	return v.Version, len(ctrs), nil
}
