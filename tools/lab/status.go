package lab

import (
	"github.com/escape-mtd/escape/arp"

	"context"
	"fmt"
	"os"
	"strings"
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
	// MountNS says the host's mount namespace is bound; Agent that its
	// agent runs and AgentAnswers that it answers Hello as the plane.
	MountNS      bool   `json:"mount_ns"`
	Agent        bool   `json:"agent"`
	AgentAnswers bool   `json:"agent_answers"`
	Problem      string `json:"problem,omitempty"`
}

// PlaneStatus is the observed state of the plane's namespaces.
type PlaneStatus struct {
	Netns   bool   `json:"netns"`
	MountNS bool   `json:"mount_ns"`
	Problem string `json:"problem,omitempty"`
}

// Status is the observed state of the lab.
type Status struct {
	Up        bool         `json:"up"`
	Inventory *Inventory   `json:"inventory,omitempty"`
	Hosts     []HostStatus `json:"hosts,omitempty"`
	Plane     PlaneStatus  `json:"plane"`
	Problem   string       `json:"problem,omitempty"`
}

// Healthy reports whether the lab is up and every host answers.
func (s Status) Healthy() bool {
	if !s.Up || s.Problem != "" || s.Plane.Problem != "" {
		return false
	}
	for _, h := range s.Hosts {
		if h.Problem != "" {
			return false
		}
	}
	return true
}

// GetStatus inspects the lab: each host's namespaces, containerd and
// agent (when the lab runs agents), and the plane's namespaces.
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
		problem := func(p string) {
			if hs.Problem == "" {
				hs.Problem = p
			}
		}
		if hs.MountNS = nsInode(h.MountNS) != 0; !hs.MountNS {
			problem("mount namespace " + h.MountNS + " missing")
		}
		v, n, err := containerdInfo(ctx, h.Containerd, inv.Namespace)
		if err != nil {
			problem("containerd not answering: " + err.Error())
		} else {
			hs.Containerd, hs.Containers = v, n
		}
		if pid, err := readPID(h.AgentPIDFile); err == nil && isAgent(pid) {
			hs.Agent = true
			if err := HelloAgent(ctx, inv, h.Name); err == nil {
				hs.AgentAnswers = true
			} else if inv.Agents {
				problem("agent not answering: " + err.Error())
			}
		} else if inv.Agents {
			problem("agent not running")
		}
		st.Hosts = append(st.Hosts, hs)
	}
	if _, err := os.Stat(arp.NetnsPath(inv.Plane.Netns)); err == nil {
		st.Plane.Netns = true
	} else {
		st.Plane.Problem = "network namespace " + inv.Plane.Netns + " missing"
	}
	if inv.Kubernetes != nil && st.Problem == "" {
		if down := kubeComponentsDown(inv.Kubernetes); len(down) > 0 {
			st.Problem = "kubernetes components not running: " + strings.Join(down, ", ")
		}
	}
	if st.Plane.MountNS = nsInode(inv.Plane.MountNS) != 0; !st.Plane.MountNS && st.Plane.Problem == "" {
		st.Plane.Problem = "mount namespace " + inv.Plane.MountNS + " missing"
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
