package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"

	"github.com/escape-mtd/escape/arp"
	"github.com/vishvananda/netlink"
)

// CtNetns is the network namespace of container id on host: named per host
// so that source and destination copies can coexist during a migration, and
// prefixed escape- so the lab's teardown sweeps it.
func CtNetns(host, id string) string { return "escape-ct-" + host + "-" + id }

// hostVeth is the host-side veth name (at most 15 bytes).
func hostVeth(host, id string) string {
	sum := sha256.Sum256([]byte(host + "/" + id))
	return "ve" + hex.EncodeToString(sum[:])[:11]
}

// CtEndpoint is the container's interface on host.
func CtEndpoint(host, id string) arp.Endpoint {
	return arp.Endpoint{Netns: CtNetns(host, id), Link: "eth0"}
}

// setupNetwork creates the container's namespace on h with eth0 (carrying
// the spec's MAC) plugged into the host bridge. The address is added only
// if withAddr; a migration destination gets it later, when it moves.
func setupNetwork(h Host, s Spec, withAddr bool) (err error) {
	ns := CtNetns(h.Name, s.ID)
	if arp.NetnsExists(ns) {
		if err := teardownNetwork(h, s.ID); err != nil {
			return err
		}
	}
	if err := arp.CreateNetns(ns); err != nil {
		return fmt.Errorf("network of %s on %s: %w", s.ID, h.Name, err)
	}
	defer func() {
		if err != nil {
			_ = teardownNetwork(h, s.ID)
		}
	}()
	mac, err := net.ParseMAC(s.MAC)
	if err != nil {
		return fmt.Errorf("network of %s: mac: %w", s.ID, err)
	}
	hh, err := arp.Handle(h.Netns)
	if err != nil {
		return fmt.Errorf("network of %s on %s: %w", s.ID, h.Name, err)
	}
	defer hh.Close()
	hv := hostVeth(h.Name, s.ID)
	peer := "c" + hv[1:]
	if err := hh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hv}, PeerName: peer, PeerHardwareAddr: mac}); err != nil {
		return fmt.Errorf("network of %s on %s: add veth: %w", s.ID, h.Name, err)
	}
	br, err := hh.LinkByName(h.Bridge)
	if err != nil {
		return fmt.Errorf("network of %s on %s: bridge %s: %w", s.ID, h.Name, h.Bridge, err)
	}
	hl, err := hh.LinkByName(hv)
	if err != nil {
		return fmt.Errorf("network of %s on %s: %w", s.ID, h.Name, err)
	}
	if err := hh.LinkSetMaster(hl, br); err != nil {
		return fmt.Errorf("network of %s on %s: enslave: %w", s.ID, h.Name, err)
	}
	if err := hh.LinkSetUp(hl); err != nil {
		return fmt.Errorf("network of %s on %s: up: %w", s.ID, h.Name, err)
	}
	pl, err := hh.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("network of %s on %s: %w", s.ID, h.Name, err)
	}
	f, err := os.Open(arp.NetnsPath(ns))
	if err != nil {
		return fmt.Errorf("network of %s: %w", s.ID, err)
	}
	defer f.Close()
	if err := hh.LinkSetNsFd(pl, int(f.Fd())); err != nil {
		return fmt.Errorf("network of %s on %s: move veth: %w", s.ID, h.Name, err)
	}
	ch, err := arp.Handle(ns)
	if err != nil {
		return err
	}
	defer ch.Close()
	cl, err := ch.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("network of %s: %w", s.ID, err)
	}
	if err := ch.LinkSetName(cl, "eth0"); err != nil {
		return fmt.Errorf("network of %s: rename: %w", s.ID, err)
	}
	if err := ch.LinkSetUp(cl); err != nil {
		return fmt.Errorf("network of %s: up: %w", s.ID, err)
	}
	if withAddr {
		if err := arp.AddAddress(CtEndpoint(h.Name, s.ID), s.IP); err != nil {
			return fmt.Errorf("network of %s: %w", s.ID, err)
		}
	}
	return nil
}

// teardownNetwork removes the container's namespace and veth on h.
func teardownNetwork(h Host, id string) error {
	if hh, err := arp.Handle(h.Netns); err == nil {
		if l, err := hh.LinkByName(hostVeth(h.Name, id)); err == nil {
			_ = hh.LinkDel(l)
		}
		hh.Close()
	}
	if err := arp.DeleteNetns(CtNetns(h.Name, id)); err != nil {
		return fmt.Errorf("network of %s on %s: %w", id, h.Name, err)
	}
	return nil
}

// guardResets adds (on) or removes the rule that drops TCP resets leaving
// the container's namespace on host. A migration's destination holds the
// address from step 3 on, but its sockets exist only once CRIU has
// restored them in step 4: a client retransmission arriving in between
// would be answered with a reset by the destination's kernel and the
// connection lost. With the rule, it is dropped and retransmitted. The rule
// goes away with the namespace, or right after the restore.
func guardResets(ctx context.Context, host, id string, on bool) error {
	op := "-I"
	if !on {
		op = "-D"
	}
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+arp.NetnsPath(CtNetns(host, id)), "iptables", "-w", op, "OUTPUT",
		"-p", "tcp", "--tcp-flags", "RST", "RST", "-m", "comment", "--comment", "escape-migration", "-j", "DROP")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("reset guard %s for %s on %s: %w: %s", op, id, host, err, strings.TrimSpace(string(out)))
	}
	return nil
}
