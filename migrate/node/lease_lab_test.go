package node

import (
	"errors"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/tools/lab"
)

// The node keeps the highest generation it has seen, across a restart,
// and refuses a lower one; a revoke keeps it; an address never comes up
// without a granted lease; a claim of an address another station answers
// for is refused, and leaves neither the address nor a lease. The hosts
// are the lab's agents; h1's is stopped and started again. They remember
// generations across tests, so this one's count from above what they saw.
func TestNodeLeases(t *testing.T) {
	l := newTestLab(t)
	h1 := l.agent(t, "h1")
	s := redisSpec(t, "nd-lease", 162, h1)
	ctx := testCtx(t)
	g := seenGen(t, s.ID, h1)
	gen := func(n uint64) uint64 { return g + n }

	r, err := h1.PrepareNetwork(ctx, s, false)
	wantDid(t, "prepare network", r, err, "created")
	r, err = h1.PrepareNetwork(ctx, s, false)
	wantDid(t, "prepare network again", r, err, "exists")
	if _, err := h1.PrepareNetwork(ctx, s, true); err == nil {
		t.Fatal("an address added without a lease")
	}
	if st := wantStatus(t, h1, s.ID, migrate.Absent); hasAddr(st, s.IP) || st.Lease.Held {
		t.Fatalf("after the refused address: %+v", st)
	}
	st, err := h1.Lease(ctx, s.ID, lease(s.IP, gen(5)))
	if err != nil || !st.Held || !st.Pinned || st.Generation != gen(5) {
		t.Fatalf("lease 5: %+v, %v", st, err)
	}
	if _, err := h1.Lease(ctx, s.ID, lease(s.IP, gen(4))); !errors.Is(err, migrate.ErrStaleGeneration) {
		t.Fatalf("lease 4 after 5: %v", err)
	}
	r, err = h1.PrepareNetwork(ctx, s, true)
	wantDid(t, "prepare network with the address under lease", r, err, "address added")
	st, err = h1.Lease(ctx, s.ID, migrate.Lease{IP: s.IP.Addr(), Generation: gen(5), TTL: time.Minute})
	if err != nil || !st.Held || st.Pinned || st.Remaining <= 0 || st.Remaining > time.Minute {
		t.Fatalf("lease 5 for a minute: %+v, %v", st, err)
	}
	r, err = h1.ReleaseAddress(ctx, s.ID, s.IP)
	wantDid(t, "release", r, err, "released")
	if st := wantStatus(t, h1, s.ID, migrate.Absent); hasAddr(st, s.IP) || st.Lease.Held || st.Lease.Generation != gen(5) {
		t.Fatalf("after release: %+v; want no address, no lease, generation 5 kept", st)
	}

	// A restarted agent refuses what it refused before.
	if err := lab.StopAgent(ctx, l.inv, "h1"); err != nil {
		t.Fatal(err)
	}
	if err := lab.StartAgent(ctx, l.inv, "h1", nil); err != nil {
		t.Fatal(err)
	}
	h1 = l.agent(t, "h1")
	if _, err := h1.Lease(ctx, s.ID, lease(s.IP, gen(4))); !errors.Is(err, migrate.ErrStaleGeneration) {
		t.Fatalf("lease 4 after a restart: %v", err)
	}
	if _, err := h1.Start(ctx, s, migrate.StartOptions{Address: true, Lease: lease(s.IP, gen(3))}); !errors.Is(err, migrate.ErrStaleGeneration) {
		t.Fatalf("start with lease 3: %v", err)
	}
	if st := wantStatus(t, h1, s.ID, migrate.Absent); hasAddr(st, s.IP) || st.Lease.Held {
		t.Fatalf("after the refused start: %+v", st)
	}

	// Another station (a namespace of h3's on the fabric) answers for the
	// address: the last look hears it.
	h3 := l.agent(t, "h3")
	rogue := s
	rogue.ID, rogue.MAC = "nd-rogue", "02:e5:00:00:02:a2"
	if _, err := h3.Remove(ctx, rogue.ID); err != nil {
		t.Fatal(err)
	}
	cleanupOn(t, rogue.ID, h3)
	if _, err := h3.PrepareNetwork(ctx, rogue, false); err != nil {
		t.Fatal(err)
	}
	if _, err := h3.ClaimAddress(ctx, rogue.ID, rogue.IP, migrate.ClaimOptions{Lease: lease(rogue.IP, seenGen(t, rogue.ID, h3)+1)}); err != nil {
		t.Fatal(err)
	}
	_, err = h1.ClaimAddress(ctx, s.ID, s.IP, migrate.ClaimOptions{LastLook: 200 * time.Millisecond, Lease: lease(s.IP, gen(6))})
	// migrate.ErrAddressTaken is what crosses the agent's API (the node
	// wraps arp's in it).
	if !errors.Is(err, migrate.ErrAddressTaken) {
		t.Fatalf("claim of an address h3 holds: %v", err)
	}
	if st := wantStatus(t, h1, s.ID, migrate.Absent); hasAddr(st, s.IP) || st.Lease.Held || st.Lease.Generation != gen(6) {
		t.Fatalf("after the refused claim: %+v; want no address, no lease, generation 6 seen", st)
	}
	p, err := h1.Probe(ctx, s.IP.Addr(), s.MAC, 200*time.Millisecond)
	if err != nil || !p.Taken || p.By != rogue.MAC {
		t.Fatalf("probe from h1's bridge: %+v, %v; want taken by %s", p, err, rogue.MAC)
	}
	if p, err := h1.Probe(ctx, s.IP.Addr(), rogue.MAC, 200*time.Millisecond); err != nil || p.Taken {
		t.Fatalf("probe ignoring the rogue: %+v, %v", p, err)
	}
	if _, err := h3.RemoveNetwork(ctx, rogue.ID); err != nil {
		t.Fatal(err)
	}
	r, err = h1.ClaimAddress(ctx, s.ID, s.IP, migrate.ClaimOptions{LastLook: 100 * time.Millisecond, Lease: lease(s.IP, gen(6))})
	wantDid(t, "claim once the rogue is gone", r, err, "claimed")
}
