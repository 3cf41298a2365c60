package arp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrAddressTaken means another station already answers for an address.
var ErrAddressTaken = errors.New("address already taken")

func toNetlinkAddr(p netip.Prefix) (*netlink.Addr, error) {
	if !p.IsValid() || !p.Addr().Is4() {
		return nil, fmt.Errorf("address %v: want a valid IPv4 prefix", p)
	}
	ip := p.Addr().As4()
	return &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(ip[:]),
		Mask: net.CIDRMask(p.Bits(), 32),
	}}, nil
}

// LinkInfo is what announcing needs to know about an interface.
type LinkInfo struct {
	Index int
	Name  string
	MAC   net.HardwareAddr
	Up    bool
}

// Link looks an endpoint's interface up.
func Link(ep Endpoint) (LinkInfo, error) {
	h, err := Handle(ep.Netns)
	if err != nil {
		return LinkInfo{}, err
	}
	defer h.Close()
	l, err := h.LinkByName(ep.Link)
	if err != nil {
		return LinkInfo{}, fmt.Errorf("link %s: %w", ep, err)
	}
	a := l.Attrs()
	return LinkInfo{Index: a.Index, Name: a.Name, MAC: a.HardwareAddr, Up: a.Flags&net.FlagUp != 0}, nil
}

// HasAddress reports whether the endpoint's interface carries addr.
func HasAddress(ep Endpoint, addr netip.Prefix) (bool, error) {
	h, err := Handle(ep.Netns)
	if err != nil {
		return false, err
	}
	defer h.Close()
	l, err := h.LinkByName(ep.Link)
	if err != nil {
		return false, fmt.Errorf("link %s: %w", ep, err)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return false, fmt.Errorf("list addresses of %s: %w", ep, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && ip == addr.Addr() {
			return true, nil
		}
	}
	return false, nil
}

// onLink runs fn with a netlink handle inside the endpoint's namespace,
// its interface, and addr in netlink's form.
func onLink(ep Endpoint, addr netip.Prefix, fn func(h *netlink.Handle, l netlink.Link, nl *netlink.Addr) error) error {
	nl, err := toNetlinkAddr(addr)
	if err != nil {
		return err
	}
	h, err := Handle(ep.Netns)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(ep.Link)
	if err != nil {
		return fmt.Errorf("link %s: %w", ep, err)
	}
	return fn(h, l, nl)
}

// AddAddress puts addr on the endpoint's interface and brings it up. Adding
// an address that is already there is not an error.
func AddAddress(ep Endpoint, addr netip.Prefix) error {
	return onLink(ep, addr, func(h *netlink.Handle, l netlink.Link, nl *netlink.Addr) error {
		if err := h.AddrAdd(l, nl); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add %v to %s: %w", addr, ep, err)
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", ep, err)
		}
		return nil
	})
}

// DelAddress removes addr from the endpoint's interface. Removing an absent
// address is not an error.
func DelAddress(ep Endpoint, addr netip.Prefix) error {
	return onLink(ep, addr, func(h *netlink.Handle, l netlink.Link, nl *netlink.Addr) error {
		if err := h.AddrDel(l, nl); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete %v from %s: %w", addr, ep, err)
		}
		return nil
	})
}

// MoveAddress moves addr from one endpoint to another so that at no moment
// both carry it: it is removed from `from` first, then, unless the address
// is answered by someone else on the destination's segment (a duplicate
// address probe, see WithProbe), added to `to`. If adding fails the address
// goes back to `from`, so a failed move leaves things as they were.
func MoveAddress(ctx context.Context, addr netip.Prefix, from, to Endpoint, opts ...Option) error {
	o := newOptions(opts)
	if _, err := toNetlinkAddr(addr); err != nil {
		return err
	}
	if err := DelAddress(from, addr); err != nil {
		return fmt.Errorf("move %v: %w", addr, err)
	}
	undo := func(cause error) error {
		if err := AddAddress(from, addr); err != nil {
			return fmt.Errorf("move %v from %s to %s: %w (and restoring it on the source failed: %v)", addr, from, to, cause, err)
		}
		return fmt.Errorf("move %v from %s to %s: %w", addr, from, to, cause)
	}
	if o.probe > 0 {
		mac, taken, err := Probe(ctx, to, addr.Addr(), o.probe)
		if err != nil {
			return undo(err)
		}
		if taken {
			return undo(fmt.Errorf("%w: %v answers from %v", ErrAddressTaken, addr.Addr(), mac))
		}
	}
	if err := ctx.Err(); err != nil {
		return undo(err)
	}
	if err := AddAddress(to, addr); err != nil {
		return undo(err)
	}
	return nil
}
