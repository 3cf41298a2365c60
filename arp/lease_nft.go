package arp

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The names the fence goes by in a namespace's nftables ruleset. Both
// tables, the inet one and the arp one, carry the same name.
const (
	leaseTable = "escape-lease"
	// fencedSet holds the addresses under a lease: their traffic passes
	// only while they are also in heldSet.
	fencedSet = "fenced"
	// heldSet holds the addresses whose lease runs, each element with the
	// lease's timeout (none when pinned).
	heldSet = "held"
)

// leasePriority runs the fence before the filter hooks, where iptables and
// CRIU's network lock sit, so that a fenced packet is dropped before any
// other table spends work on it (a drop is final in any base chain, so the
// order is about cost, not about who wins).
const leasePriority = -10

// loopbackIndex is the interface index the kernel always gives lo
// (LOOPBACK_IFINDEX), in every namespace.
const loopbackIndex = 1

// arpHeaderEthIPv4 is the fixed start of an Ethernet/IPv4 ARP header:
// hardware type 1, protocol 0x0800, address lengths 6 and 4. Matching it
// makes the sender protocol address's offset (14) certain.
var arpHeaderEthIPv4 = []byte{0, 1, 8, 0, 6, 4}

// nfArpOut is the arp family's output hook (NF_ARP_OUT), which the kernel's
// own ARP replies and requests pass; nftables' ChainHookOutput is the inet
// one (NF_INET_LOCAL_OUT) and means something else in an arp table.
const nfArpOut = 1

// leaseTables are the two tables of a fence: inet for the address's IPv4
// traffic, arp for the kernel's ARP answers about it.
func leaseTables() []*nftables.Table {
	return []*nftables.Table{
		{Name: leaseTable, Family: nftables.TableFamilyINet},
		{Name: leaseTable, Family: nftables.TableFamilyARP},
	}
}

// leaseSets are a table's fenced and held sets. Sets belong to one table,
// so each table has its own pair; every change touches both tables in one
// batch, which keeps them in step.
func leaseSets(t *nftables.Table) (fenced, held *nftables.Set) {
	fenced = &nftables.Set{Table: t, Name: fencedSet, KeyType: nftables.TypeIPAddr}
	held = &nftables.Set{Table: t, Name: heldSet, KeyType: nftables.TypeIPAddr, HasTimeout: true}
	return fenced, held
}

func leaseElement(addr netip.Addr, ttl time.Duration) nftables.SetElement {
	k := addr.As4()
	return nftables.SetElement{Key: k[:], Timeout: ttl}
}

// queueFence adds to c's batch the tables, sets, chains and rules of the
// fence, with addr fenced. Tables, sets and chains that exist are kept
// (with the held set's elements, so a grant survives), and the chains'
// rules are rewritten, so queueing it again changes nothing.
func queueFence(c *nftables.Conn, addr netip.Addr) error {
	for _, t := range leaseTables() {
		c.AddTable(t)
		fenced, held := leaseSets(t)
		if err := c.AddSet(fenced, []nftables.SetElement{leaseElement(addr, 0)}); err != nil {
			return err
		}
		if err := c.AddSet(held, nil); err != nil {
			return err
		}
		switch t.Family {
		case nftables.TableFamilyINet:
			queueChain(c, t, "input", nftables.ChainHookInput, expr.MetaKeyIIF, 16, fenced, held)
			queueChain(c, t, "output", nftables.ChainHookOutput, expr.MetaKeyOIF, 12, fenced, held)
		case nftables.TableFamilyARP:
			queueChain(c, t, "output", nftables.ChainHookRef(nfArpOut), 0, 14, fenced, held)
		}
	}
	return nil
}

// queueChain writes one base chain of the fence. In the inet table: pass
// loopback (loopKey: the meta key of the interface index), then drop IPv4
// packets whose address at addrOffset (destination on input, source on
// output) is fenced and not held. In the arp table (loopKey 0): drop
// Ethernet/IPv4 ARP packets whose sender protocol address is fenced and
// not held.
func queueChain(c *nftables.Conn, t *nftables.Table, name string, hook *nftables.ChainHook, loopKey expr.MetaKey, addrOffset uint32, fenced, held *nftables.Set) {
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name:     name,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  hook,
		Priority: nftables.ChainPriorityRef(leasePriority),
		Policy:   &accept,
	})
	c.FlushChain(ch)
	var match []expr.Any
	if t.Family == nftables.TableFamilyINet {
		lo := make([]byte, 4)
		binary.NativeEndian.PutUint32(lo, loopbackIndex)
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: loopKey, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: lo},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}})
		match = []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		}
	} else {
		match = []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: uint32(len(arpHeaderEthIPv4))},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: arpHeaderEthIPv4},
		}
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(match,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOffset, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: fenced.Name, SetID: fenced.ID},
		&expr.Lookup{SourceRegister: 1, SetName: held.Name, SetID: held.ID, Invert: true},
		// The counter tells how much the fence dropped, for whoever
		// wonders why an address went quiet.
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)})
}
