package node

import (
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// Without shared storage the destination fetches the dump from the source
// (Offer, Fetch through the peers' stream); the client's connection and
// the counter carry on, both ways.
func TestNodeMigrateFetch(t *testing.T) {
	l := newTestLab(t)
	p1 := &pipePeers{self: "h1", nodes: map[string]*Node{}}
	p2 := &pipePeers{self: "h2", nodes: map[string]*Node{}}
	h1, h2 := l.node(t, "h1", false, WithPeers(p1)), l.node(t, "h2", false, WithPeers(p2))
	p1.nodes["h2"], p2.nodes["h1"] = h2, h1
	ctx := testCtx(t)
	s := redisSpec(t, "nd-mig-fetch", 163, h1, h2)
	if _, err := h1.Start(ctx, s, migrate.StartOptions{Address: true, Lease: lease(s.IP, 1)}); err != nil {
		t.Fatal(err)
	}
	rc := labtest.DialRedis(t, l.inv, s.IP.Addr(), 10*time.Second)
	mustIncr(t, rc, 1)
	migrateStaged(t, h1, h2, s, migrate.MigrationImage(s.ID, "m1"), 2, false)
	mustIncr(t, rc, 2)
	migrateStaged(t, h2, h1, s, migrate.MigrationImage(s.ID, "m2"), 3, true)
	mustIncr(t, rc, 3)
	p1.wg.Wait()
	p2.wg.Wait()
}
