package node

import (
	"fmt"
	"os"
	"strings"

	"github.com/escape-mtd/escape/arp"
	"github.com/google/nftables"
)

// CRIU's nftables network lock (network-lock nftables in the container's
// CRIU configuration) is one table per dump, "inet CRIU-<run id of the
// dump>": a dump adds it, and the restore of that dump removes it once its
// sockets are back. A restore that fails leaves its table behind, and the
// restore of another checkpoint removes only its own, so the copy it
// starts would stay cut off. iptables has no such trap: every lock is the
// one CRIU chain.

// criuTablePrefix names CRIU's lock tables.
const criuTablePrefix = "CRIU-"

// networkLocks returns the names of the CRIU lock tables in the namespace
// ns, and with remove deletes them. Outside a dump or a restore of the
// container there should be none: one that is left cuts the running copy
// off from every client. Removing them is only for a restore that carries
// no live connection (a rollback): a migration's dump keeps its lock until
// its own restore takes the connections over, and removing it earlier
// would let the kernel reset them.
func networkLocks(netns string, remove bool) ([]string, error) {
	ns, err := os.Open(arp.NetnsPath(netns))
	if os.IsNotExist(err) {
		return nil, nil // no namespace, no lock
	}
	if err != nil {
		return nil, fmt.Errorf("network locks in %s: %w", netns, err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		return nil, fmt.Errorf("network locks in %s: %w", netns, err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("network locks in %s: list: %w", netns, err)
	}
	var names []string
	for _, t := range tables {
		if strings.HasPrefix(t.Name, criuTablePrefix) {
			if remove {
				c.DelTable(t)
			}
			names = append(names, t.Name)
		}
	}
	if !remove || len(names) == 0 {
		return names, nil
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("network locks in %s: remove %v: %w", netns, names, err)
	}
	return names, nil
}
