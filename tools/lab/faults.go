package lab

import (
	"fmt"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/escape-mtd/escape/arp"
)

// Faults a test provokes on purpose, as an operator would see them on real
// machines: a host cut off the network (its switch port down), or only
// the link between the plane and one host broken. Each is idempotent.

// cutTable is the nftables table CutPlaneLink adds in a host's netns.
const cutTable = "escape_lab_cut"

// Partition takes host's port on the fabric down: nothing reaches it and
// it reaches nothing, plane, peers and clients alike.
func Partition(inv *Inventory, host string) error { return setPort(inv, host, false) }

// Heal brings host's fabric port back up.
func Heal(inv *Inventory, host string) error { return setPort(inv, host, true) }

func setPort(inv *Inventory, host string, up bool) error {
	h, ok := inv.Host(host)
	if !ok {
		return fmt.Errorf("partition: no host %q", host)
	}
	fab, err := arp.Handle(inv.Fabric.Netns)
	if err != nil {
		return err
	}
	defer fab.Close()
	l, err := fab.LinkByName(h.Port)
	if err != nil {
		return fmt.Errorf("partition %s: find port %s: %w", host, h.Port, err)
	}
	if up {
		err = fab.LinkSetUp(l)
	} else {
		err = fab.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("partition %s: set port %s up=%v: %w", host, h.Port, up, err)
	}
	return nil
}

// CutPlaneLink drops, inside host's network namespace, every packet to or
// from the plane's address: the host still reaches its peers and clients,
// only the plane cannot reach it (nor it the plane).
func CutPlaneLink(inv *Inventory, host string) error {
	return withNFT(inv, host, func(c *nftables.Conn) error {
		dropTable(c)
		t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: cutTable})
		ip := inv.Plane.IP.As4()
		for _, hook := range []struct {
			name   string
			hook   *nftables.ChainHook
			offset uint32 // saddr at 12, daddr at 16 of the IPv4 header
		}{{"input", nftables.ChainHookInput, 12}, {"output", nftables.ChainHookOutput, 16}, {"forward_in", nftables.ChainHookForward, 12}, {"forward_out", nftables.ChainHookForward, 16}} {
			ch := c.AddChain(&nftables.Chain{Name: hook.name, Table: t, Type: nftables.ChainTypeFilter,
				Hooknum: hook.hook, Priority: nftables.ChainPriorityFilter})
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{2}}, // NFPROTO_IPV4
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: hook.offset, Len: 4},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip[:]},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}})
		}
		return nil
	})
}

// HealPlaneLink removes CutPlaneLink's rules.
func HealPlaneLink(inv *Inventory, host string) error {
	return withNFT(inv, host, func(c *nftables.Conn) error { dropTable(c); return nil })
}

// PlaneLinkCut reports whether CutPlaneLink's rules are in place on host.
func PlaneLinkCut(inv *Inventory, host string) (bool, error) {
	var cut bool
	err := withNFT(inv, host, func(c *nftables.Conn) error {
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
		for _, t := range tables {
			cut = cut || t.Name == cutTable
		}
		return err
	})
	return cut, err
}

func dropTable(c *nftables.Conn) {
	tables, _ := c.ListTablesOfFamily(nftables.TableFamilyINet)
	for _, t := range tables {
		if t.Name == cutTable {
			c.DelTable(t)
		}
	}
}

func withNFT(inv *Inventory, host string, fn func(*nftables.Conn) error) error {
	h, ok := inv.Host(host)
	if !ok {
		return fmt.Errorf("plane link: no host %q", host)
	}
	f, err := os.Open(arp.NetnsPath(h.Netns))
	if err != nil {
		return fmt.Errorf("plane link of %s: %w", host, err)
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		return fmt.Errorf("plane link of %s: nftables: %w", host, err)
	}
	defer c.CloseLasting()
	if err := fn(c); err != nil {
		return fmt.Errorf("plane link of %s: %w", host, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("plane link of %s: apply nftables: %w", host, err)
	}
	return nil
}
