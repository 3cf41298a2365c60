package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/migrate"
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

// hostEndpoint is the host's own interface on the segment: its bridge.
// Probes and sentries go out from it, never from the container's: a staged
// copy has the container's MAC, and frames from it would teach the
// segment's bridge to send the live source's traffic to the destination.
func (n *Node) hostEndpoint() arp.Endpoint {
	return arp.Endpoint{Netns: n.cfg.Netns, Link: n.cfg.Bridge}
}

// ctEndpoint and ctNetns are container id's interface and network
// namespace where the step under way found it (place.go).
func (n *Node) ctEndpoint(id string) arp.Endpoint {
	p := n.placeOf(id)
	return arp.Endpoint{Netns: p.netns, Link: p.link}
}
func (n *Node) ctNetns(id string) string { return n.placeOf(id).netns }

// networkReady reports whether the container's namespace is as
// setupNetwork leaves it: eth0 with s's MAC, its peer up on the bridge.
func (n *Node) networkReady(s migrate.Spec) bool {
	p := n.placeOf(s.ID)
	if p.adopted && !p.hasNetwork() {
		return true // nothing of the node's to prepare: the host's network
	}
	if !arp.NetnsExists(n.ctNetns(s.ID)) {
		return false
	}
	li, err := arp.Link(n.ctEndpoint(s.ID))
	if err != nil || !li.Up || !strings.EqualFold(li.MAC.String(), s.MAC) {
		return false
	}
	if !p.own {
		return true // the user's namespace, plugged in by the user
	}
	hh, err := arp.Handle(n.cfg.Netns)
	if err != nil {
		return false
	}
	defer hh.Close()
	hl, err := hh.LinkByName(hostVeth(n.cfg.Name, s.ID))
	if err != nil {
		return false
	}
	br, err := hh.LinkByName(n.cfg.Bridge)
	return err == nil && hl.Attrs().MasterIndex == br.Attrs().Index && hl.Attrs().Flags&net.FlagUp != 0
}

// setupNetwork creates the container's namespace with eth0 (carrying the
// spec's MAC) plugged into the host's bridge, and the lease's fence in it
// before any address can be there. A namespace left in another shape is
// made anew.
func (n *Node) setupNetwork(s migrate.Spec) (err error) {
	if p := n.placeOf(s.ID); !p.own || !p.hasNetwork() {
		return fmt.Errorf("the network of adopted container %s is its user's (%q): the node makes none for it here", s.ID, p.netns)
	}
	ns := n.ctNetns(s.ID)
	if arp.NetnsExists(ns) {
		if _, err := n.teardownNetwork(s.ID); err != nil {
			return err
		}
	}
	if err := arp.CreateNetns(ns); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_, _ = n.teardownNetwork(s.ID)
		}
	}()
	mac, err := net.ParseMAC(s.MAC)
	if err != nil {
		return fmt.Errorf("mac: %w", err)
	}
	hh, err := arp.Handle(n.cfg.Netns)
	if err != nil {
		return err
	}
	defer hh.Close()
	hv := hostVeth(n.cfg.Name, s.ID)
	peer := "c" + hv[1:]
	if l, err := hh.LinkByName(hv); err == nil {
		_ = hh.LinkDel(l) // left by a namespace deleted behind our back
	}
	if err := hh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hv}, PeerName: peer, PeerHardwareAddr: mac}); err != nil {
		return fmt.Errorf("add veth: %w", err)
	}
	br, err := hh.LinkByName(n.cfg.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", n.cfg.Bridge, err)
	}
	hl, err := hh.LinkByName(hv)
	if err != nil {
		return err
	}
	if err := hh.LinkSetMaster(hl, br); err != nil {
		return fmt.Errorf("enslave: %w", err)
	}
	if err := hh.LinkSetUp(hl); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	pl, err := hh.LinkByName(peer)
	if err != nil {
		return err
	}
	f, err := os.Open(arp.NetnsPath(ns))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := hh.LinkSetNsFd(pl, int(f.Fd())); err != nil {
		return fmt.Errorf("move veth: %w", err)
	}
	ch, err := arp.Handle(ns)
	if err != nil {
		return err
	}
	defer ch.Close()
	cl, err := ch.LinkByName(peer)
	if err != nil {
		return err
	}
	if err := ch.LinkSetName(cl, n.ctEndpoint(s.ID).Link); err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	if err := installLease(n.ctEndpoint(s.ID), s.IP.Addr()); err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	if err := ch.LinkSetUp(cl); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	return nil
}

// teardownNetwork removes the container's namespace and veth, and says
// whether there was anything to remove.
func (n *Node) teardownNetwork(id string) (bool, error) {
	if p := n.placeOf(id); !p.own || !p.hasNetwork() {
		// A user's namespace and its interface stay: the node made
		// neither (its address and fence went before, removeNetwork).
		return false, nil
	}
	had := false
	if hh, err := arp.Handle(n.cfg.Netns); err == nil {
		if l, err := hh.LinkByName(hostVeth(n.cfg.Name, id)); err == nil {
			had = true
			_ = hh.LinkDel(l)
		}
		hh.Close()
	}
	ns := n.ctNetns(id)
	if arp.NetnsExists(ns) {
		had = true
	}
	if err := arp.DeleteNetns(ns); err != nil {
		return had, err
	}
	return had, nil
}

// addresses lists the IPv4 addresses on the container's interface.
func (n *Node) addresses(id string) ([]netip.Prefix, error) { return addressesOn(n.ctEndpoint(id)) }

// addressesOn lists the IPv4 addresses on ep's interface.
func addressesOn(ep arp.Endpoint) ([]netip.Prefix, error) {
	h, err := arp.Handle(ep.Netns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	l, err := h.LinkByName(ep.Link)
	if err != nil {
		return nil, err
	}
	as, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		bits, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, bits))
	}
	return out, nil
}

// guard is a set of iptables rules in a migration destination's namespace.
type guard migrate.Guards

const (
	// guardResets drops TCP resets leaving the namespace. The destination
	// holds the address from step 3 on, but its sockets exist only once
	// CRIU has restored them in step 4: a client retransmission arriving in
	// between would be answered with a reset by the destination's kernel
	// and the connection lost. With the rule it is dropped and
	// retransmitted.
	guardResets = guard(migrate.GuardResets)
	// guardHold drops every packet coming in but loopback's, and the FINs
	// going out. A lazily restored copy runs before all its memory is in
	// (lazy.go): until the last page is, no client request may reach it,
	// so that a copy with missing memory can still be thrown away and the
	// source restored instead, with nothing a client was told lost. A
	// thrown-away copy's sockets close as it dies, and their FIN would
	// tell the client the connection ended although the source then
	// carries it on (its RST is dropped by guardResets): CRIU takes the
	// sockets out of repair mode before it learns that the daemon died
	// (TestFaultLazyDaemon/dies-unnoticed). Other outgoing packets pass:
	// they carry what the dump holds (the restored sockets' queues), which
	// the source would send again after an undo. Dropping all of them
	// made the client's gap longer than the frozen window by 280 ms and
	// more (planebench, 64 MiB): a send that netfilter refuses counts as
	// local congestion, and TCP waits 500 ms before trying again. A FIN
	// the copy sends on its own while held is sent again the same way
	// once the hold is lifted.
	guardHold = guard(migrate.GuardHold)
)

func (g guard) rules() [][]string {
	var rs [][]string
	if g&guardResets != 0 {
		rs = append(rs, []string{"OUTPUT", "-p", "tcp", "--tcp-flags", "RST", "RST", "-m", "comment", "--comment", "escape-migration", "-j", "DROP"})
	}
	if g&guardHold != 0 {
		rs = append(rs, []string{"INPUT", "!", "-i", "lo", "-m", "comment", "--comment", "escape-hold", "-j", "DROP"},
			[]string{"OUTPUT", "!", "-o", "lo", "-p", "tcp", "--tcp-flags", "FIN", "FIN", "-m", "comment", "--comment", "escape-hold", "-j", "DROP"})
	}
	return rs
}

// setGuards adds (on) or removes the rules of g in the namespace ns, in
// one iptables-restore: a lazy restore's hold and the reset guard go away
// in the same instant. The rules go away with the namespace too. Adding a
// rule twice adds it twice, and removing an absent one fails: for the
// steps that know what they set (see ensureGuards).
func setGuards(ctx context.Context, ns string, g guard, on bool) error {
	rs := g.rules()
	if len(rs) == 0 {
		return nil
	}
	op := "-I"
	if !on {
		op = "-D"
	}
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "%s %s\n", op, strings.Join(r, " "))
	}
	b.WriteString("COMMIT\n")
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+arp.NetnsPath(ns), "iptables-restore", "-w", "--noflush")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("guards %s in %s: %w: %s", op, ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// presentGuards returns which rules of g are in the namespace ns.
func presentGuards(ctx context.Context, ns string, g guard) guard {
	var have guard
	for _, one := range []guard{guardResets, guardHold} {
		if g&one == 0 {
			continue
		}
		all := true
		for _, r := range one.rules() {
			if exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + arp.NetnsPath(ns), "iptables", "-w", "-C"}, r...)...).Run() != nil {
				all = false
			}
		}
		if all {
			have |= one
		}
	}
	return have
}

// ensureGuards adds the rules of g that are missing (on) and reports
// whether any was; off, it removes whichever are present (clearGuards).
func ensureGuards(ctx context.Context, ns string, g guard, on bool) (bool, error) {
	if !on {
		return clearGuards(ctx, ns, g)
	}
	missing := g &^ presentGuards(ctx, ns, g)
	if missing == 0 {
		return false, nil
	}
	return true, setGuards(ctx, ns, missing, true)
}

// clearGuards removes whichever rules of g are present, and says whether
// any was: a restarted agent, or plane, does not know how far the crashed
// one got.
func clearGuards(ctx context.Context, ns string, g guard) (bool, error) {
	var errs []error
	had := false
	for _, r := range g.rules() {
		nsArg := "--net=" + arp.NetnsPath(ns)
		if exec.CommandContext(ctx, "nsenter", append([]string{nsArg, "iptables", "-w", "-C"}, r...)...).Run() != nil {
			continue // absent (or no namespace: nothing to clear)
		}
		had = true
		if out, err := exec.CommandContext(ctx, "nsenter", append([]string{nsArg, "iptables", "-w", "-D"}, r...)...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("remove guard %v in %s: %w: %s", r, ns, err, strings.TrimSpace(string(out))))
		}
	}
	return had, errors.Join(errs...)
}
