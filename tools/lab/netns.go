package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// netnsDir is where iproute2 keeps named namespaces; using it means
// `ip netns` and `nsenter --net=` see the lab's namespaces too.
const netnsDir = "/run/netns"

// createNetns creates the named namespace without moving the calling
// goroutine: netns.NewNamed switches the current thread, so it runs on a
// locked thread that is switched back before it is released.
func createNetns(name string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			runtime.UnlockOSThread()
			return
		}
		defer orig.Close()
		ns, err := netns.NewNamed(name)
		if err != nil {
			errc <- err
			// the thread may be half switched: let the runtime drop it
			return
		}
		ns.Close()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("return to original netns: %w", err)
			return // leave the thread locked: it dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	return nil
}

// handleIn returns a netlink handle that operates inside the named namespace.
func handleIn(name string) (*netlink.Handle, netns.NsHandle, error) {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, 0, fmt.Errorf("open netns %s: %w", name, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, 0, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	return h, ns, nil
}

// listLabNetns lists the named namespaces that belong to the lab (prefix).
func listLabNetns(prefix string) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", netnsDir, err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func deleteNetns(name string) error {
	if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		// A namespace file whose bind mount is already gone cannot be
		// unmounted, but must still be removed.
		if rmErr := os.Remove(filepath.Join(netnsDir, name)); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			return fmt.Errorf("delete netns %s: %w", name, err)
		}
	}
	return nil
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
