package node

import (
	"os"
	"slices"
	"testing"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/tools/lab/labtest"
	"github.com/google/nftables"
)

// In a namespace of the container's name: CRIU's lock tables go, any other
// table stays, and a namespace that does not exist has nothing to clear.
func TestClearNetworkLocksRemovesOnlyCRIUTables(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("creating a network namespace needs root (CAP_SYS_ADMIN): run the tests as root")
	}
	host, id := "nl", "netlock-test"
	ns := CtNetns(host, id)
	if err := arp.CreateNetns(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = arp.DeleteNetns(ns) })
	c := labtest.NFTables(t, ns)
	for _, name := range []string{"CRIU-0a1b2c3d-dump-one", "CRIU-4e5f-dump-two", "operator"} {
		c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	}
	c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "CRIU-ip-family"})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}

	if found, err := networkLocks(ns, false); err != nil || len(found) != 2 {
		t.Fatalf("NetworkLocks: %v, %v; want the two inet CRIU- tables", found, err)
	}
	removed, err := networkLocks(ns, true)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(removed)
	if want := []string{"CRIU-0a1b2c3d-dump-one", "CRIU-4e5f-dump-two"}; !slices.Equal(removed, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	left, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tb := range left {
		names = append(names, tb.Name)
	}
	slices.Sort(names)
	if want := []string{"CRIU-ip-family", "operator"}; !slices.Equal(names, want) {
		t.Fatalf("tables left %v, want %v (CRIU locks only in the inet family)", names, want)
	}
	if removed, err := networkLocks(ns, true); err != nil || len(removed) != 0 {
		t.Fatalf("second clear: removed %v, %v; want nothing", removed, err)
	}
	if removed, err := networkLocks(CtNetns(host, "no-such-container"), true); err != nil || len(removed) != 0 {
		t.Fatalf("absent namespace: removed %v, %v; want nothing", removed, err)
	}
}
