package node

import (
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// A lease that lapses fences the address in the kernel, with the agent
// alive and doing nothing: the client no longer reaches the container.
// Renewed, it does again.
func TestNodeLapsedLeaseFences(t *testing.T) {
	l := newTestLab(t)
	if !l.inHost(t, "h1") {
		return
	}
	n := l.node(t, "h1")
	s := redisSpec(t, "nd-fence", 164, n)
	ctx := testCtx(t)
	ttl := 2 * time.Second
	if _, err := n.Start(ctx, s, migrate.StartOptions{Address: true, Lease: migrate.Lease{IP: s.IP.Addr(), Generation: 1, TTL: ttl}}); err != nil {
		t.Fatal(err)
	}
	rc := labtest.DialRedis(t, l.inv, s.IP.Addr(), 5*time.Second)
	mustIncr(t, rc, 1)
	time.Sleep(ttl + time.Second)
	if st := wantStatus(t, n, s.ID, migrate.Running); st.Lease.Held || !hasAddr(st, s.IP) {
		t.Fatalf("after the lease lapsed: %+v; want the address there but not held", st)
	}
	if _, err := rc.Incr("k", 2*time.Second); err == nil {
		t.Fatal("the container answers with its lease lapsed")
	}
	if _, err := n.Lease(ctx, s.ID, migrate.Lease{IP: s.IP.Addr(), Generation: 1, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	rc2 := labtest.DialRedis(t, l.inv, s.IP.Addr(), 10*time.Second)
	// 2, or 3 if the INCR sent while fenced was retransmitted in between.
	if got, err := rc2.Incr("k", 10*time.Second); err != nil || (got != 2 && got != 3) {
		t.Fatalf("INCR once renewed: %d, %v", got, err)
	}
}
