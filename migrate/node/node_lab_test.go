package node

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// A redis started from the image is reached from the client namespace;
// every container step asked twice does it once.
func TestNodeStartKillRemoveIdempotent(t *testing.T) {
	l := newTestLab(t)
	if !l.inHost(t, "h1") {
		return
	}
	n := l.node(t, "h1")
	s := redisSpec(t, "nd-start", 150, n)
	ctx := testCtx(t)

	r, err := n.Start(ctx, s, migrate.StartOptions{Address: true, Lease: lease(s.IP, 1)})
	wantDid(t, "start", r, err, "started")
	r, err = n.Start(ctx, s, migrate.StartOptions{Address: true, Lease: lease(s.IP, 1)})
	wantDid(t, "start again", r, err, "already running")
	st := wantStatus(t, n, s.ID, migrate.Running)
	if !st.Network || !hasAddr(st, s.IP) || st.PID == 0 || st.MemoryBytes == 0 || !st.Lease.Held || st.Lease.Generation != 1 {
		t.Fatalf("status %+v: want network, address, pid, memory and lease 1 held", st)
	}
	if len(st.NetworkLocks) != 0 {
		t.Fatalf("network locks on a fresh container: %v", st.NetworkLocks)
	}
	conf := readConfig(t, n, s.ID)
	for _, want := range []string{"tcp-established\n", "skip-in-flight\n", "network-lock nftables\n", "external mnt[/proc/acpi]:escape-mask-0\n", n.maskDir()} {
		if !strings.Contains(conf, want) {
			t.Fatalf("CRIU configuration lacks %q:\n%s", want, conf)
		}
	}
	rc := labtest.DialRedis(t, l.inv, s.IP.Addr(), 10*time.Second)
	mustIncr(t, rc, 1)

	r, err = n.Restart(ctx, s)
	wantDid(t, "restart", r, err, "restarted")
	wantStatus(t, n, s.ID, migrate.Running)
	rc = labtest.DialRedis(t, l.inv, s.IP.Addr(), 10*time.Second)
	mustIncr(t, rc, 1) // a fresh redis: its memory went with the old task

	r, err = n.Kill(ctx, s.ID)
	wantDid(t, "kill", r, err, "killed")
	r, err = n.Kill(ctx, s.ID)
	wantDid(t, "kill again", r, err, "no task")
	st = wantStatus(t, n, s.ID, migrate.Created)
	if !st.Network || !hasAddr(st, s.IP) {
		t.Fatalf("kill took the network: %+v", st)
	}
	r, err = n.Remove(ctx, s.ID)
	wantDid(t, "remove", r, err, "removed")
	r, err = n.Remove(ctx, s.ID)
	wantDid(t, "remove again", r, err, "absent")
	if st := wantStatus(t, n, s.ID, migrate.Absent); st.Network {
		t.Fatalf("remove left the network: %+v", st)
	}
	if _, err := n.Status(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	r, err = n.Kill(ctx, s.ID)
	wantDid(t, "kill of an absent container", r, err, "absent")
}

// A safe checkpoint leaves the container running; a rollback restores it
// from the checkpoint with its connections closed and the counter as it
// was then, and leaves no tcp-close behind in the CRIU configuration.
func TestNodeSafeCheckpointThenRollback(t *testing.T) {
	l := newTestLab(t)
	if !l.inHost(t, "h1") {
		return
	}
	n := l.node(t, "h1")
	s := redisSpec(t, "nd-rollback", 151, n)
	ctx := testCtx(t)
	if _, err := n.Start(ctx, s, migrate.StartOptions{Address: true, Lease: lease(s.IP, 1)}); err != nil {
		t.Fatal(err)
	}
	rc := labtest.DialRedis(t, l.inv, s.IP.Addr(), 10*time.Second)
	mustIncr(t, rc, 1)
	mustIncr(t, rc, 2)
	img := migrate.CheckpointImage(s.ID, 1, 1)
	ck, err := n.Checkpoint(ctx, s.ID, img, migrate.CheckpointOptions{})
	if err != nil || ck.Did != "dumped" || ck.Bytes <= 0 || ck.CRIU.PagesWritten == 0 {
		t.Fatalf("checkpoint: %+v, %v", ck, err)
	}
	wantStatus(t, n, s.ID, migrate.Running)
	mustIncr(t, rc, 3) // the connection survived the dump
	again, err := n.Checkpoint(ctx, s.ID, img, migrate.CheckpointOptions{})
	if err != nil || again.Did != "exists" || again.Bytes != ck.Bytes {
		t.Fatalf("checkpoint again: %+v, %v; want exists with %d bytes", again, err, ck.Bytes)
	}
	if size, err := n.VerifyImage(ctx, img); err != nil || size != ck.Bytes {
		t.Fatalf("verify: %d, %v", size, err)
	}
	mustIncr(t, rc, 4)

	// The rollback: kill, then restore with the checkpoint's connections
	// closed and whatever failed restores left in the namespace cleared.
	if _, err := n.Kill(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	res, err := n.Restore(ctx, s, img, migrate.RestoreOptions{TCPClose: true, ClearLocks: true})
	if err != nil || res.Did != "restored" || res.Lazy {
		t.Fatalf("restore: %+v, %v", res, err)
	}
	if strings.Contains(readConfig(t, n, s.ID), optTCPClose) {
		t.Fatalf("tcp-close left in the CRIU configuration:\n%s", readConfig(t, n, s.ID))
	}
	st := wantStatus(t, n, s.ID, migrate.Running)
	if len(st.NetworkLocks) != 0 {
		t.Fatalf("network locks after the rollback: %v", st.NetworkLocks)
	}
	// The old connection was restored closed.
	if _, err := rc.Incr("k", 5*time.Second); err == nil {
		t.Fatal("the connection of the rolled-back copy still answers")
	}
	rc2 := labtest.DialRedis(t, l.inv, s.IP.Addr(), 10*time.Second)
	mustIncr(t, rc2, 3) // 2 at the checkpoint
	// A rollback asked again restores again: the copy is replaced.
	res, err = n.Restore(ctx, s, img, migrate.RestoreOptions{TCPClose: true, ClearLocks: true})
	if err != nil || res.Did != "restored" {
		t.Fatalf("restore again: %+v, %v", res, err)
	}
	rc3 := labtest.DialRedis(t, l.inv, s.IP.Addr(), 10*time.Second)
	mustIncr(t, rc3, 3)

	r, err := n.DropImage(ctx, img)
	wantDid(t, "drop image", r, err, "dropped")
	r, err = n.DropImage(ctx, img)
	wantDid(t, "drop image again", r, err, "absent")
	if _, err := n.VerifyImage(ctx, img); err == nil {
		t.Fatal("a dropped image verifies")
	}
	if _, err := n.Restore(ctx, s, img, migrate.RestoreOptions{}); err == nil {
		t.Fatal("restore from a dropped image accepted")
	}
	wantStatus(t, n, s.ID, migrate.Running) // the refused restore touched nothing
	mustIncr(t, rc3, 4)
}

// migrateStaged moves s from src to dst step by step as the plane drives a
// staged migration, asserting that every step asked twice does it once.
// Without a storage in common the destination fetches the dump from the
// source.
func migrateStaged(t *testing.T, src, dst migrate.Host, s migrate.Spec, img migrate.ImageName, gen uint64, lazy bool) migrate.RestoreResult {
	t.Helper()
	ctx := testCtx(t)
	freshImage(t, img, src, dst)
	guards := migrate.GuardResets
	if lazy {
		guards |= migrate.GuardHold
	}
	r, err := dst.Stage(ctx, s, img, migrate.StageOptions{Guards: guards})
	wantDid(t, "stage", r, err, "staged")
	r, err = dst.Stage(ctx, s, img, migrate.StageOptions{Guards: guards})
	wantDid(t, "stage again", r, err, "already staged")
	sentry, err := dst.StartSentry(ctx, s.IP.Addr(), s.MAC, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := src.Checkpoint(ctx, s.ID, img, migrate.CheckpointOptions{Exit: true})
	if err != nil || ck.Did != "dumped" {
		t.Fatalf("checkpoint: %+v, %v", ck, err)
	}
	wantStatus(t, src, s.ID, migrate.Stopped)
	if p, err := dst.StopSentry(ctx, sentry); err != nil || p.Taken {
		t.Fatalf("sentry: %+v, %v", p, err)
	}
	if _, err := dst.StopSentry(ctx, sentry); err == nil {
		t.Fatal("a sentry stopped twice")
	}
	si, err := src.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	di, err := dst.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if di.SharedStorage == si.SharedStorage && di.SharedStorage != "" {
		// Shared storage: the destination sees the dump where it is.
	} else {
		tk, err := src.Offer(ctx, migrate.Offer{Kind: migrate.OfferCheckpoint, Name: string(img), To: dst.Name()})
		if err != nil {
			t.Fatal(err)
		}
		tr, err := dst.Fetch(ctx, img, peer(src, tk))
		if err != nil || tr.Did != "fetched" || tr.Bytes != ck.Bytes || tr.Files == 0 {
			t.Fatalf("fetch: %+v, %v (dump of %d bytes)", tr, err, ck.Bytes)
		}
		tr, err = dst.Fetch(ctx, img, peer(src, tk))
		if err != nil || tr.Did != "exists" {
			t.Fatalf("fetch again: %+v, %v", tr, err)
		}
	}
	r, err = src.ReleaseAddress(ctx, s.ID, s.IP)
	wantDid(t, "release address", r, err, "released")
	r, err = src.ReleaseAddress(ctx, s.ID, s.IP)
	wantDid(t, "release address again", r, err, "absent")
	claim := migrate.ClaimOptions{LastLook: 20 * time.Millisecond, Lease: lease(s.IP, gen)}
	r, err = dst.ClaimAddress(ctx, s.ID, s.IP, claim)
	wantDid(t, "claim address", r, err, "claimed")
	r, err = dst.ClaimAddress(ctx, s.ID, s.IP, claim)
	wantDid(t, "claim address again", r, err, "already claimed")
	if lazy {
		// A lazy copy must stay silent until its pages are in: with the
		// stage's hold taken away, the restore is refused and nothing runs.
		if _, err := dst.SetGuards(ctx, s.ID, migrate.GuardHold, false); err != nil {
			t.Fatal(err)
		}
		if _, err := dst.StartStaged(ctx, s, img, migrate.StartStagedOptions{Lazy: true}); err == nil || !strings.Contains(err.Error(), "GuardHold") {
			t.Fatalf("lazy start staged without the hold in place: %v, want a refusal naming GuardHold", err)
		}
		wantStatus(t, dst, s.ID, migrate.Created)
		if _, err := dst.SetGuards(ctx, s.ID, migrate.GuardHold, true); err != nil {
			t.Fatal(err)
		}
	}
	res, err := dst.StartStaged(ctx, s, img, migrate.StartStagedOptions{Lazy: lazy, Guards: guards})
	if err != nil || res.Did != "restored" || res.Lazy != lazy {
		t.Fatalf("start staged: %+v, %v", res, err)
	}
	again, err := dst.StartStaged(ctx, s, img, migrate.StartStagedOptions{Lazy: lazy, Guards: guards})
	if err != nil || again.Did != "already running" {
		t.Fatalf("start staged again: %+v, %v", again, err)
	}
	if hasLazy([]byte(readConfig(t, dst, s.ID))) {
		t.Fatal("lazy-pages left in the destination's CRIU configuration")
	}
	if _, err := dst.Announce(ctx, s.ID, s.IP.Addr(), migrate.AnnounceOptions{Rounds: 2, Interval: 1100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	r, err = src.Remove(ctx, s.ID)
	wantDid(t, "remove the source", r, err, "removed")
	st := wantStatus(t, dst, s.ID, migrate.Running)
	if !hasAddr(st, s.IP) || !st.Lease.Held || st.Lease.Generation != gen || len(st.NetworkLocks) != 0 {
		t.Fatalf("destination %+v: want the address under lease %d and no lock", st, gen)
	}
	if g := guardsOf(ctx, dst, s.ID, guardResets|guardHold); g != 0 {
		t.Fatalf("guards %#x left on the destination", g)
	}
	return res
}

// A migration h1 -> h2 over shared storage, then back h2 -> h1 lazily,
// keeps the client's connection and the counter (no reset), and the
// 4 MiB value stored in between comes back byte for byte. The hosts are
// the lab's agents, which mount its shared storage.
func TestNodeMigrateSharedStorage(t *testing.T) {
	l := newTestLab(t)
	h1, h2 := l.agent(t, "h1"), l.agent(t, "h2")
	ctx := testCtx(t)
	i1, err := h1.Hello(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i2, err := h2.Hello(ctx)
	if err != nil || i1.SharedStorage == "" || i1.SharedStorage != i2.SharedStorage || !i2.LazyRestore || i2.BootID == "" || i2.Name != "h2" {
		t.Fatalf("hello: %+v, %+v, %v; want the same shared storage, lazy restore and a boot id", i1, i2, err)
	}
	s := redisSpec(t, "nd-mig-shared", 152, h1, h2)
	g := seenGen(t, s.ID, h1, h2)
	if _, err := h1.Start(ctx, s, migrate.StartOptions{Address: true, Lease: lease(s.IP, g+1)}); err != nil {
		t.Fatal(err)
	}
	rc := labtest.DialRedis(t, l.inv, s.IP.Addr(), 10*time.Second)
	mustIncr(t, rc, 1)
	migrateStaged(t, h1, h2, s, migrate.MigrationImage(s.ID, "m1"), g+2, false)
	mustIncr(t, rc, 2)
	blob := []byte(strings.Repeat("escape-", 600_000))
	if err := rc.Set("blob", blob, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	migrateStaged(t, h2, h1, s, migrate.MigrationImage(s.ID, "m2"), g+3, true)
	mustIncr(t, rc, 3)
	got, err := rc.Get("blob", 20*time.Second)
	if err != nil || string(got) != string(blob) {
		t.Fatalf("the 4 MiB value after the lazy migration: %d bytes, %v", len(got), err)
	}
}

// freshImage drops image img from the hosts now and at cleanup: the
// agents keep their images (and the shared storage its) across tests.
func freshImage(t *testing.T, img migrate.ImageName, hosts ...migrate.Host) {
	t.Helper()
	drop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, h := range hosts {
			if _, err := h.DropImage(ctx, img); err != nil {
				return fmt.Errorf("drop %s on %s: %w", img, h.Name(), err)
			}
		}
		return nil
	}
	if err := drop(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := drop(); err != nil {
			t.Error(err)
		}
	})
}
