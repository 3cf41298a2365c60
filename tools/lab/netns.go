package lab

import (
	"github.com/escape-mtd/escape/arp"

	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// peerNs opens the named namespace, to move a veth end into it.
func peerNs(name string) (netns.NsHandle, error) {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return 0, fmt.Errorf("open netns %s: %w", name, err)
	}
	return ns, nil
}

// listLabNetns lists the named namespaces that belong to the lab (prefix).
func listLabNetns(prefix string) ([]string, error) {
	entries, err := os.ReadDir(arp.NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", arp.NetnsDir, err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// setUp brings a link up.
func setUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// addBridge creates a bridge in the handle's namespace and brings it up.
func addBridge(h *netlink.Handle, name string) error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge %s: %w", name, err)
	}
	return setUp(h, name)
}

// addVethInto creates a veth pair from the handle's namespace: end stays
// there, enslaved to bridge; peer moves into peerNs under peerName.
func addVethInto(h *netlink.Handle, end, bridge string, peerNs netns.NsHandle, peerName string) error {
	br, err := h.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", bridge, err)
	}
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: end, MasterIndex: br.Attrs().Index},
		PeerName:      peerName,
		PeerNamespace: netlink.NsFd(int(peerNs)),
	}
	if err := h.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth %s<->%s: %w", end, peerName, err)
	}
	return setUp(h, end)
}

// addAddr assigns ip/bits of subnet to link inside the handle's namespace.
func addAddr(h *netlink.Handle, link string, ip netip.Addr, subnet netip.Prefix) error {
	l, err := h.LinkByName(link)
	if err != nil {
		return fmt.Errorf("find link %s: %w", link, err)
	}
	ipnet := &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(subnet.Bits(), 32)}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipnet}); err != nil {
		return fmt.Errorf("add %s to %s: %w", ipnet, link, err)
	}
	return nil
}

// enslave attaches link to bridge inside the handle's namespace.
func enslave(h *netlink.Handle, link, bridge string) error {
	l, err := h.LinkByName(link)
	if err != nil {
		return fmt.Errorf("find link %s: %w", link, err)
	}
	br, err := h.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", bridge, err)
	}
	if err := h.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("enslave %s to %s: %w", link, bridge, err)
	}
	return nil
}

// buildNetwork makes the fabric and attaches the client, the plane and
// every host to it, each by a veth whose fabric end is its Port.
func buildNetwork(inv *Inventory) error {
	if err := arp.CreateNetns(inv.Fabric.Netns); err != nil {
		return err
	}
	fab, err := arp.Handle(inv.Fabric.Netns)
	if err != nil {
		return err
	}
	defer fab.Close()
	if err := addBridge(fab, inv.Fabric.Bridge); err != nil {
		return err
	}
	attach := func(ep Endpoint, bridge string) error {
		if err := arp.CreateNetns(ep.Netns); err != nil {
			return err
		}
		h, err := arp.Handle(ep.Netns)
		if err != nil {
			return err
		}
		defer h.Close()
		ns, err := peerNs(ep.Netns)
		if err != nil {
			return err
		}
		defer ns.Close()
		if err := addVethInto(fab, ep.Port, inv.Fabric.Bridge, ns, "eth0"); err != nil {
			return err
		}
		if err := setUp(h, "eth0"); err != nil { // arp.CreateNetns brought lo up
			return err
		}
		if bridge != "" {
			if err := addBridge(h, bridge); err != nil {
				return err
			}
			if err := enslave(h, "eth0", bridge); err != nil {
				return err
			}
		}
		return addAddr(h, ep.Link, ep.IP, inv.Subnet)
	}
	if err := attach(inv.Client, ""); err != nil {
		return fmt.Errorf("client namespace: %w", err)
	}
	if err := attach(inv.Plane.Endpoint, ""); err != nil {
		return fmt.Errorf("plane namespace: %w", err)
	}
	for _, host := range inv.Hosts {
		if err := attach(host.Endpoint, host.Bridge); err != nil {
			return fmt.Errorf("host %s: %w", host.Name, err)
		}
	}
	return nil
}
