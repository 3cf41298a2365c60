package kube

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/escape-mtd/escape/plane"
)

// How a Node becomes a host of the plane's inventory.

const (
	// AgentAddressAnnotation on a Node gives its agent's host:port,
	// overriding the InternalIP and the configured port.
	AgentAddressAnnotation = "escape.mtd/agent-address"
	// LabelPrefix marks the node labels that are the model's host labels:
	// escape.mtd/kernel=k1 is the label kernel=k1.
	LabelPrefix = "escape.mtd/"
	// zoneLabel is the well-known zone label: the model's datacenter
	// unless escape.mtd/datacenter says otherwise (hosts of one zone are
	// neighbours, as the model's datacenter makes them).
	zoneLabel = "topology.kubernetes.io/zone"
)

// HostOf maps a Node to a host of the inventory: its name; its agent at
// the escape.mtd/agent-address annotation, else at its InternalIP and
// agentPort; and the model's labels (model.RankDestinations weighs every
// key): each escape.mtd/<key> label as <key>, and, where those are
// silent, datacenter from the zone, kernel and runtime from what the
// kubelet reports. Other node labels are not host labels: a label unique
// to each node (kubernetes.io/hostname) would only add the same distance
// between every pair. A node without an agent address is an error.
func HostOf(n *corev1.Node, agentPort int) (plane.HostConfig, error) {
	h := plane.HostConfig{Name: n.Name, Labels: map[string]string{}}
	if a := n.Annotations[AgentAddressAnnotation]; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return plane.HostConfig{}, fmt.Errorf("node %s: annotation %s: %q: want host:port", n.Name, AgentAddressAnnotation, a)
		}
		h.Agent = a
	} else {
		for _, addr := range n.Status.Addresses {
			if addr.Type == corev1.NodeInternalIP && net.ParseIP(addr.Address) != nil {
				h.Agent = net.JoinHostPort(addr.Address, strconv.Itoa(agentPort))
				break
			}
		}
	}
	if h.Agent == "" {
		return plane.HostConfig{}, fmt.Errorf("node %s: no InternalIP address and no %s annotation: its agent cannot be reached", n.Name, AgentAddressAnnotation)
	}
	for k, v := range n.Labels {
		if key, ok := strings.CutPrefix(k, LabelPrefix); ok && key != "" && !strings.Contains(key, "/") {
			h.Labels[key] = v
		}
	}
	defaults := map[string]string{"datacenter": n.Labels[zoneLabel],
		"kernel": n.Status.NodeInfo.KernelVersion, "runtime": n.Status.NodeInfo.ContainerRuntimeVersion}
	for k, v := range defaults {
		if _, set := h.Labels[k]; !set && v != "" {
			h.Labels[k] = v
		}
	}
	return h, nil
}

// Inventory maps nodes to hosts, sorted by name; the nodes that cannot
// be hosts are left out, each with its reason.
func Inventory(nodes []*corev1.Node, agentPort int) ([]plane.HostConfig, []error) {
	var hosts []plane.HostConfig
	var errs []error
	for _, n := range nodes {
		h, err := HostOf(n, agentPort)
		if err == nil {
			err = plane.ValidateHosts([]plane.HostConfig{h})
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		hosts = append(hosts, h)
	}
	sort.Slice(hosts, func(a, b int) bool { return hosts[a].Name < hosts[b].Name })
	return hosts, errs
}
