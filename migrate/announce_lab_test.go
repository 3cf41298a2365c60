package migrate_test

import (
	"context"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
)

// TestLabAnnounceStopsOnRelease: a container that gives its address up
// stops announcing it. A round of an announcement made before the release
// and sent after it would point the segment (the switches' tables, the
// neighbours' caches) back at a host that no longer serves the address,
// since its copies share the MAC. The fault matrix found it: two hops
// less than an announcement interval apart had the first destination
// announce the address while the second one held it.
func TestLabAnnounceStopsOnRelease(t *testing.T) {
	f := newLabFix(t, "lm-announce", 80, "h1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h1 := f.obs["h1"]
	if r, err := h1.Announce(ctx, f.spec.ID, f.spec.IP.Addr(), migrate.AnnounceOptions{Rounds: 3, Interval: 1100 * time.Millisecond}); err != nil || r.Did != "announced" {
		t.Fatalf("announce: %+v, %v", r, err)
	}
	if r, err := h1.ReleaseAddress(ctx, f.spec.ID, f.spec.IP); err != nil || r.Did != "released" {
		t.Fatalf("release: %+v, %v", r, err)
	}
	// Rounds 2 and 3 would come 1.1 and 2.2 s after the first: nothing may
	// speak for the address on the segment meanwhile.
	res, err := f.obs["h2"].Probe(ctx, f.spec.IP.Addr(), "", 2500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Taken {
		t.Fatalf("after the release, %s still speaks for %v", res.By, f.spec.IP.Addr())
	}
	// Nor does a new announcement of an address the container lacks.
	if r, err := h1.Announce(ctx, f.spec.ID, f.spec.IP.Addr(), migrate.AnnounceOptions{Rounds: 1}); err != nil || r.Did != "absent" {
		t.Fatalf("announce without the address: %+v, %v", r, err)
	}
	// Given back, it announces again.
	if r, err := h1.ClaimAddress(ctx, f.spec.ID, f.spec.IP, migrate.ClaimOptions{Lease: migrate.Lease{IP: f.spec.IP.Addr(), Generation: f.gen + 1}}); err != nil {
		t.Fatalf("claim: %+v, %v", r, err)
	}
	if r, err := h1.Announce(ctx, f.spec.ID, f.spec.IP.Addr(), migrate.AnnounceOptions{Rounds: 1}); err != nil || r.Did != "announced" {
		t.Fatalf("announce once claimed again: %+v, %v", r, err)
	}
	f.finish()
}

// TestLabRemoveLapsedCopyStaysSilent: removing a copy whose address was
// never released (its agent was down when the plane moved the address on,
// and its lease lapsed) never lets it answer for the address. The removal
// used to lift the lease's fence first and delete the interface after, so
// for a moment the copy answered ARP for an address another host served
// (the agent-killed-at-restore case of the fault matrix caught it during
// Recover's removal of the destination's leftover).
func TestLabRemoveLapsedCopyStaysSilent(t *testing.T) {
	f := newLabFix(t, "lm-remove", 81, "h1")
	f.redis.halt()
	f.arp.halt()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 4; i++ {
		if i > 0 {
			f.deploy("h1")
		}
		o := startARPObserver(t, f.inv, f.spec.IP.Addr(), f.spec.MAC, time.Millisecond)
		time.Sleep(300 * time.Millisecond)
		if o.last("h1").IsZero() {
			t.Fatal("the copy does not answer before its lease lapses")
		}
		if _, err := f.obs["h1"].Lease(ctx, f.spec.ID, migrate.Lease{IP: f.spec.IP.Addr(), Generation: f.gen + 1, TTL: 500 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		lapsed := time.Now()
		if at := o.last("h1"); at.After(lapsed.Add(-300 * time.Millisecond)) {
			t.Fatalf("the copy answered at %s, after its lease lapsed", at.Format(time.StampMilli))
		}
		if _, err := f.obs["h1"].Remove(ctx, f.spec.ID); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		o.halt()
		if at := o.last("h1"); at.After(lapsed) {
			t.Fatalf("round %d: the lapsed copy answered for the address at %s, while it was removed", i, at.Format(time.StampMilli))
		}
	}
}
