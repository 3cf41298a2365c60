package node

import (
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// Without shared storage the destination fetches the dump from the source
// (Offer, Fetch through the peers' stream); the client's connection and
// the counter carry on, both ways. The hosts are the lab's agents, run for
// the test without its shared storage: the destination's agent fetches
// from the source's over the fabric, with mutual TLS.
func TestNodeMigrateFetch(t *testing.T) {
	l := newTestLab(t)
	for _, h := range []string{"h1", "h2"} {
		labtest.AgentSettings(t, l.inv, h, func(a map[string]any) { delete(a, "shared") })
	}
	h1, h2 := l.agent(t, "h1"), l.agent(t, "h2")
	ctx := testCtx(t)
	s := redisSpec(t, "nd-mig-fetch", 163, h1, h2)
	g := seenGen(t, s.ID, h1, h2)
	if _, err := h1.Start(ctx, s, migrate.StartOptions{Address: true, Lease: lease(s.IP, g+1)}); err != nil {
		t.Fatal(err)
	}
	rc := labtest.DialRedis(t, l.inv, s.IP.Addr(), 10*time.Second)
	mustIncr(t, rc, 1)
	migrateStaged(t, h1, h2, s, migrate.MigrationImage(s.ID, "m1"), g+2, false)
	mustIncr(t, rc, 2)
	migrateStaged(t, h2, h1, s, migrate.MigrationImage(s.ID, "m2"), g+3, true)
	mustIncr(t, rc, 3)
}
