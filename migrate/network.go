package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
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

// guard is a set of iptables rules in a migration destination's namespace.
type guard int

const (
	// guardResets drops TCP resets leaving the namespace. The destination
	// holds the address from step 3 on, but its sockets exist only once
	// CRIU has restored them in step 4: a client retransmission arriving in
	// between would be answered with a reset by the destination's kernel
	// and the connection lost. With the rule it is dropped and
	// retransmitted.
	guardResets guard = 1 << iota
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
	guardHold
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

// setGuards adds (on) or removes the rules of g in the namespace of
// container id on host, in one iptables-restore: a lazy restore's hold and
// the reset guard go away in the same instant. The rules go away with the
// namespace too.
func setGuards(ctx context.Context, host, id string, g guard, on bool) error {
	op := "-I"
	if !on {
		op = "-D"
	}
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, r := range g.rules() {
		fmt.Fprintf(&b, "%s %s\n", op, strings.Join(r, " "))
	}
	b.WriteString("COMMIT\n")
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+arp.NetnsPath(CtNetns(host, id)), "iptables-restore", "-w", "--noflush")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("migration guard %s for %s on %s: %w: %s", op, id, host, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// clearGuards removes whichever rules of g are present: a restarted
// migrator does not know how far the crashed one got.
func clearGuards(ctx context.Context, host, id string, g guard) error {
	var errs []error
	for _, r := range g.rules() {
		ns := "--net=" + arp.NetnsPath(CtNetns(host, id))
		if exec.CommandContext(ctx, "nsenter", append([]string{ns, "iptables", "-w", "-C"}, r...)...).Run() != nil {
			continue // absent (or no namespace: nothing to clear)
		}
		if out, err := exec.CommandContext(ctx, "nsenter", append([]string{ns, "iptables", "-w", "-D"}, r...)...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("remove migration guard %v for %s on %s: %w: %s", r, id, host, err, strings.TrimSpace(string(out))))
		}
	}
	return errors.Join(errs...)
}
