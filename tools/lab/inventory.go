package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/escape-mtd/escape/internal/mtls"
)

// InventoryVersion is the schema version of lab.json. A reader refuses any
// other version rather than guessing at fields it does not know. Version 2
// gave every host (and the plane) a mount namespace of its own.
const InventoryVersion = 2

// Paths every lab host and the plane namespace see at the standard places
// of an installed ESCAPE, inside their own mount namespace.
const (
	// InsideConfig is the ESCAPE configuration file (sensor, agent or plane section).
	InsideConfig = "/etc/escape/escape.yaml"
	// InsidePKI holds ca.crt and the namespace's own certificate and key.
	InsidePKI = "/etc/escape/pki"
	// InsideContainerd is the host's containerd socket.
	InsideContainerd = "/run/containerd/containerd.sock"
	// AgentPort and PlaneAPIPort are the TCP ports of the agents and of
	// the plane's operator API on the fabric.
	AgentPort    = 7443
	PlaneAPIPort = 7444
)

// Inventory describes a running lab. Up writes it atomically to
// <root>/lab.json; the tools and the tests read it. Unless a field says
// "inside", a path is one of the root namespace, where the lab runs.
type Inventory struct {
	Version int    `json:"version"`
	Root    string `json:"root"`
	RunDir  string `json:"run_dir"`
	// Shared is the shared-storage directory that stands in for NFS: with
	// SharedStorage every host sees the same files at this same path (the
	// root namespace too); without, only the root namespace has it.
	Shared        string `json:"shared"`
	SharedStorage bool   `json:"shared_storage"`
	// Agents says whether Up started a node agent on every host.
	Agents bool `json:"agents"`
	// BinDir holds the ESCAPE binaries the lab runs (escape-sensor).
	BinDir string `json:"bin_dir"`
	// Subnet is the one L2 subnet of the fabric; ServiceRange is the part of
	// it reserved for container (service) addresses, allocated by the plane.
	Subnet       netip.Prefix     `json:"subnet"`
	ServiceRange netip.Prefix     `json:"service_range"`
	Fabric       Fabric           `json:"fabric"`
	Client       Endpoint         `json:"client"`
	Plane        PlaneNS          `json:"plane"`
	PKI          PKI              `json:"pki"`
	Hosts        []Host           `json:"hosts"`
	Images       map[string]Image `json:"images"`
	Namespace    string           `json:"containerd_namespace"`
	// NetnsPrefix must start the name of every network namespace created
	// inside the lab; CgroupParent is the cgroup subtree for its containers
	// ("/<CgroupParent>/<host>/<container>"). Down sweeps both.
	NetnsPrefix  string            `json:"netns_prefix"`
	CgroupParent string            `json:"cgroup_parent"`
	Extra        map[string]string `json:"extra,omitempty"`
	// Kubernetes is the single-node Kubernetes in a host (up --kubernetes),
	// with its admin kubeconfig; nil without.
	Kubernetes *Kubernetes `json:"kubernetes,omitempty"`
}

// kubeHost reports whether host runs the lab's Kubernetes node.
func (inv *Inventory) kubeHost(host string) bool {
	return inv.Kubernetes != nil && inv.Kubernetes.Host == host
}

// Fabric is the shared L2 segment: a bridge inside a namespace of its own,
// so the root namespace's links and routes are never touched.
type Fabric struct {
	Netns  string `json:"netns"`
	Bridge string `json:"bridge"`
}

// Endpoint is a lab namespace with one address on the fabric.
type Endpoint struct {
	Netns string     `json:"netns"`
	IP    netip.Addr `json:"ip"`
	// Link is the interface that carries IP inside Netns.
	Link string `json:"link"`
	// Port is its port on the fabric bridge (in Fabric.Netns): Partition
	// takes it down.
	Port string `json:"port"`
}

// Machine is what a lab namespace pair has of a separate machine: its own
// mount namespace (bound at MountNS) over directories of the lab.
type Machine struct {
	// MountNS is the bind-mounted mount namespace file (nsenter --mount).
	MountNS string `json:"mount_ns"`
	// Dir holds the machine's own files: etc (its /etc/escape), state (its
	// /var/lib/escape), log (its /var/log/escape).
	Dir string `json:"dir"`
	// Config is its /etc/escape/escape.yaml as the root namespace sees it.
	Config string `json:"config"`
	// TLS are its certificate, key and CA as the root namespace sees them;
	// inside they are under InsidePKI.
	TLS mtls.Files `json:"tls"`
	// LogDir is its /var/log/escape as the root namespace sees it.
	LogDir string `json:"log_dir"`
}

// PlaneNS is the namespace the control plane runs in, as on a machine of
// its own: an address on the fabric, no containerd, no lab host paths.
type PlaneNS struct {
	Endpoint
	Machine
	// API is the address:port its operator API listens on.
	API string `json:"api"`
}

// PKI is the lab's certificate authority. Its key never leaves Dir, in the
// root namespace; tests issue more certificates with Inventory.Issue.
type PKI struct {
	Dir string `json:"dir"`
	// CA is the CA certificate (Dir/ca.crt).
	CA string `json:"ca"`
	// Operator is an operator identity for the plane's API.
	Operator     mtls.Files `json:"operator"`
	OperatorName string     `json:"operator_name"`
}

// Host is one test host: network and mount namespaces with their own
// containerd and, with Agents, a node agent (escape-sensor run).
type Host struct {
	Name string `json:"name"`
	Endpoint
	Machine
	// Bridge is the bridge inside the host's namespace that containers attach
	// to (by a veth) so that their addresses sit on the fabric's L2 segment.
	Bridge string `json:"bridge"`
	// Uplink is the host's port on the fabric, enslaved to Bridge.
	Uplink string `json:"uplink"`
	// Containerd is the host's containerd socket reached from the root
	// namespace: a symlink into the daemon's own /run, through
	// /proc/<pid>/root. Inside the host it is InsideContainerd.
	Containerd string `json:"containerd"`
	// Agent is the address:port the host's node agent listens on.
	Agent string `json:"agent"`
	// Labels tell hosts apart for the destination model: datacenter,
	// network, kernel, runtime, config.
	Labels map[string]string `json:"labels"`
	// CRIU is the CRIU binary runc runs on this host (the private 4.2
	// install), the same path inside and out.
	CRIU string `json:"criu,omitempty"`
	// PIDFile holds the host's containerd pid; AgentPIDFile its agent's.
	PIDFile      string `json:"pid_file"`
	AgentPIDFile string `json:"agent_pid_file"`
	// LogFile is containerd's log; AgentLog the agent's stdout and stderr.
	LogFile  string `json:"log_file"`
	AgentLog string `json:"agent_log"`
	// RuncRoot is runc's state directory inside the host. Every host has
	// its own /run, so containerd's default is no longer shared.
	RuncRoot string `json:"runc_root"`
	// RootDir is the host's /var/lib/containerd as the root namespace sees it.
	RootDir string `json:"root_dir"`
}

// Image is a workload image available on every host, both imported into
// each containerd (Ref) and as a plain root filesystem under the lab root.
type Image struct {
	Ref    string `json:"ref"`
	RootFS string `json:"rootfs"`
}

// CgroupsPath is the cgroup path a container with id on host must use.
func (inv *Inventory) CgroupsPath(host, id string) string {
	return "/" + inv.CgroupParent + "/" + host + "/" + id
}

// Host returns the host called name.
func (inv *Inventory) Host(name string) (Host, bool) {
	for _, h := range inv.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return Host{}, false
}

// ErrNoLab means no lab inventory exists under the given root.
var ErrNoLab = errors.New("no lab is up (run: escape-lab up)")

// InventoryPath is where a lab rooted at root keeps its inventory.
func InventoryPath(root string) string { return filepath.Join(root, "lab.json") }

// LoadInventory reads the inventory of the lab rooted at root.
func LoadInventory(ctx context.Context, root string) (*Inventory, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	path := InventoryPath(root)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("load lab inventory %s: %w", path, ErrNoLab)
	}
	if err != nil {
		return nil, fmt.Errorf("load lab inventory: %w", err)
	}
	return parseInventory(path, data)
}

func parseInventory(path string, data []byte) (*Inventory, error) {
	var inv Inventory
	if err := json.Unmarshal(data, &inv); err != nil {
		return nil, fmt.Errorf("parse lab inventory %s: %w", path, err)
	}
	if inv.Version != InventoryVersion {
		return nil, fmt.Errorf("parse lab inventory %s: schema version %d, want %d", path, inv.Version, InventoryVersion)
	}
	if len(inv.Hosts) == 0 {
		return nil, fmt.Errorf("parse lab inventory %s: no hosts", path)
	}
	if inv.NetnsPrefix == "" || inv.CgroupParent == "" {
		return nil, fmt.Errorf("parse lab inventory %s: netns_prefix and cgroup_parent are required", path)
	}
	for i, h := range inv.Hosts {
		if h.Name == "" || h.Netns == "" || h.Containerd == "" || h.MountNS == "" || !h.IP.IsValid() {
			return nil, fmt.Errorf("parse lab inventory %s: host %d is incomplete", path, i)
		}
	}
	if inv.Plane.Netns == "" || inv.Plane.MountNS == "" || !inv.Plane.IP.IsValid() {
		return nil, fmt.Errorf("parse lab inventory %s: the plane namespace is incomplete", path)
	}
	return &inv, nil
}

func saveInventory(inv *Inventory) error {
	data, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab inventory: %w", err)
	}
	if err := atomicfile.WriteFile(InventoryPath(inv.Root), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write lab inventory: %w", err)
	}
	return nil
}
