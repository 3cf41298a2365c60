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
)

// InventoryVersion is the schema version of lab.json. A reader refuses any
// other version rather than guessing at fields it does not know.
const InventoryVersion = 1

// Inventory describes a running lab. Up writes it atomically to
// <root>/lab.json; the sensor, the plane and the tests read it.
type Inventory struct {
	Version int    `json:"version"`
	Root    string `json:"root"`
	RunDir  string `json:"run_dir"`
	// Shared is the shared-storage directory that stands in for NFS: every
	// host sees the same files at the same path.
	Shared string `json:"shared"`
	// Subnet is the one L2 subnet of the fabric; ServiceRange is the part of
	// it reserved for container (service) addresses, allocated by the plane.
	Subnet       netip.Prefix     `json:"subnet"`
	ServiceRange netip.Prefix     `json:"service_range"`
	Fabric       Fabric           `json:"fabric"`
	Client       Endpoint         `json:"client"`
	Hosts        []Host           `json:"hosts"`
	Images       map[string]Image `json:"images"`
	Namespace    string           `json:"containerd_namespace"`
	// NetnsPrefix must start the name of every network namespace created
	// inside the lab; CgroupParent is the cgroup subtree for its containers
	// ("/<CgroupParent>/<host>/<container>"). Down sweeps both.
	NetnsPrefix  string            `json:"netns_prefix"`
	CgroupParent string            `json:"cgroup_parent"`
	Extra        map[string]string `json:"extra,omitempty"`
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
}

// Host is one test host: a network namespace with its own containerd.
type Host struct {
	Name string `json:"name"`
	Endpoint
	// Bridge is the bridge inside the host's namespace that containers attach
	// to (by a veth) so that their addresses sit on the fabric's L2 segment.
	Bridge string `json:"bridge"`
	// Uplink is the host's port on the fabric, enslaved to Bridge.
	Uplink string `json:"uplink"`
	// Containerd is the host's containerd socket.
	Containerd string `json:"containerd"`
	// Labels tell hosts apart for the destination model: datacenter,
	// network, kernel, runtime, config.
	Labels map[string]string `json:"labels"`
	// CRIU is the CRIU binary runc runs on this host (the private 4.2
	// install): the plane runs its lazy-pages daemon from it.
	CRIU string `json:"criu,omitempty"`
	// PIDFile holds the host's containerd pid.
	PIDFile string `json:"pid_file"`
	LogFile string `json:"log_file"`
	// RuncRoot is the runc state directory containers on this host must use
	// (runc option Root). All hosts share one kernel and runc keys its state
	// by container id alone, so the default /run/containerd/runc would let
	// the same container id on two hosts clobber each other.
	RuncRoot string `json:"runc_root"`
	// StateDir and RootDir are the host's containerd state and root.
	StateDir string `json:"state_dir"`
	RootDir  string `json:"root_dir"`
}

// Image is a workload image available on every host, both imported into
// each containerd (Ref) and as a plain root filesystem on shared storage.
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
		if h.Name == "" || h.Netns == "" || h.Containerd == "" || !h.IP.IsValid() {
			return nil, fmt.Errorf("parse lab inventory %s: host %d is incomplete", path, i)
		}
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
