package node

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/escape-mtd/escape/arp"
	"github.com/escape-mtd/escape/migrate"
)

// A config with every field wrong is refused, each field named.
func TestConfigRefusesGarbage(t *testing.T) {
	_, err := New(Config{Name: "H 1", Containerd: "run/sock", Netns: "a/b", Bridge: "a-very-long-bridge-name",
		CgroupParent: "../up", RuncRoot: "rel", CRIU: "/nonexistent/criu", StateDir: "rel", SharedDir: "/nonexistent"})
	if err == nil {
		t.Fatal("garbage config accepted")
	}
	for _, field := range []string{"Name", "Containerd", "Netns", "Bridge", "CgroupParent", "RuncRoot", "CRIU", "StateDir", "SharedDir"} {
		if !strings.Contains(err.Error(), field+" ") {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
}

// A node started again on the same state takes lazy-pages and tcp-close
// (left by a crashed agent in the middle of a restore) out of every CRIU
// configuration, and keeps the rest; its shared storage keeps its id.
func TestNewStripsRestoreOptionsLeftByACrash(t *testing.T) {
	state, shared := t.TempDir(), t.TempDir()
	cfg := Config{Name: "hx", Containerd: "/run/escape-nowhere.sock", Bridge: "br0", StateDir: state, SharedDir: shared}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := migrate.Spec{ID: "nd-crash", Image: redisImage, IP: netip.MustParsePrefix("198.18.1.160/15"), MAC: "02:e5:00:00:01:a0"}
	if err := n.writeCRIUConfig(s); err != nil {
		t.Fatal(err)
	}
	clean := readConfig(t, n, s.ID)
	for _, opt := range []string{optLazyPages, optTCPClose} {
		if err := addOption(n.criuConfig(s.ID), opt); err != nil {
			t.Fatal(err)
		}
	}
	id := n.storageID
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readConfig(t, n, s.ID); got == clean {
		t.Fatal("the options were not added")
	}
	n2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	if got := readConfig(t, n2, s.ID); got != clean {
		t.Fatalf("after New:\n%s\nwant\n%s", got, clean)
	}
	if n2.storageID != id || len(id) != 32 {
		t.Fatalf("storage id %q, then %q", id, n2.storageID)
	}
}

// Every step answers garbage with an error that says what is wrong, before
// it touches anything.
func TestStepsRefuseGarbage(t *testing.T) {
	l := newTestLab(t)
	if !l.inHost(t, "h1") {
		return
	}
	n := l.node(t, "h1")
	ctx := testCtx(t)
	good := redisSpec(t, "nd-garbage", 153, n)
	noImage := good
	noImage.Image = "escape.local/no-such-image:latest"
	pathImage := good
	pathImage.Image = "/var/lib/rootfs"
	badID := good
	badID.ID = "../etc"
	ip := good.IP
	for _, tc := range []struct {
		name, want string
		call       func() error
	}{
		{"start bad id", "invalid container id", func() error { _, err := n.Start(ctx, badID, migrate.StartOptions{}); return err }},
		{"start path image", "paths are refused", func() error { _, err := n.Start(ctx, pathImage, migrate.StartOptions{}); return err }},
		{"start missing image", "EnsureImage first", func() error { _, err := n.Start(ctx, noImage, migrate.StartOptions{}); return err }},
		{"start lease for another address", "want a grant", func() error {
			_, err := n.Start(ctx, good, migrate.StartOptions{Address: true, Lease: migrate.Lease{IP: netip.MustParseAddr("198.18.1.99"), Generation: 1}})
			return err
		}},
		{"start lease generation 0", "generation 0", func() error {
			_, err := n.Start(ctx, good, migrate.StartOptions{Address: true, Lease: migrate.Lease{Generation: 0}})
			return err
		}},
		{"stage missing image", "EnsureImage first", func() error {
			_, err := n.Stage(ctx, noImage, "migrations/x/y", migrate.StageOptions{})
			return err
		}},
		{"checkpoint image path", "image name", func() error {
			_, err := n.Checkpoint(ctx, good.ID, "../../etc", migrate.CheckpointOptions{})
			return err
		}},
		{"checkpoint absolute image", "image name", func() error {
			_, err := n.Checkpoint(ctx, good.ID, "/tmp/x", migrate.CheckpointOptions{})
			return err
		}},
		{"checkpoint absent container", "nothing to dump", func() error {
			_, err := n.Checkpoint(ctx, good.ID, "checkpoints/nd-garbage/1", migrate.CheckpointOptions{})
			return err
		}},
		{"restore missing image", "no such file", func() error {
			_, err := n.Restore(ctx, good, "checkpoints/nd-garbage/none", migrate.RestoreOptions{})
			return err
		}},
		{"restore upper-case image", "image name", func() error {
			_, err := n.Restore(ctx, good, "Checkpoints/X", migrate.RestoreOptions{})
			return err
		}},
		{"verify bad name", "image name", func() error { _, err := n.VerifyImage(ctx, "a//b"); return err }},
		{"drop bad name", "image name", func() error { _, err := n.DropImage(ctx, ".hidden"); return err }},
		{"ensure bad ref", "OCI image reference", func() error { _, err := n.EnsureImage(ctx, "not a ref", nil); return err }},
		{"ensure bad ticket", "64 hex digits", func() error {
			_, err := n.EnsureImage(ctx, redisImage, &migrate.Peer{Name: "h2", Ticket: "xyz"})
			return err
		}},
		{"fetch bad name", "image name", func() error { _, err := n.Fetch(ctx, "../x", migrate.Peer{Name: "h2"}); return err }},
		{"offer unknown kind", "want checkpoint or image", func() error {
			_, err := n.Offer(ctx, migrate.Offer{Kind: "rootfs", Name: "x", To: "h2"})
			return err
		}},
		{"offer missing checkpoint", "no such file", func() error {
			_, err := n.Offer(ctx, migrate.Offer{Kind: migrate.OfferCheckpoint, Name: "checkpoints/none/1", To: "h2"})
			return err
		}},
		{"offer missing image", "EnsureImage first", func() error {
			_, err := n.Offer(ctx, migrate.Offer{Kind: migrate.OfferImage, Name: noImage.Image, To: "h2"})
			return err
		}},
		{"offer to itself", "this host itself", func() error {
			_, err := n.Offer(ctx, migrate.Offer{Kind: migrate.OfferImage, Name: redisImage, To: "h1"})
			return err
		}},
		{"claim without a namespace", "PrepareNetwork first", func() error {
			_, err := n.ClaimAddress(ctx, good.ID, ip, migrate.ClaimOptions{Lease: lease(ip, 1)})
			return err
		}},
		{"claim /32", "subnet prefix", func() error {
			_, err := n.ClaimAddress(ctx, good.ID, netip.PrefixFrom(ip.Addr(), 32), migrate.ClaimOptions{Lease: lease(ip, 1)})
			return err
		}},
		{"claim a long last look", "last look", func() error {
			_, err := n.ClaimAddress(ctx, good.ID, ip, migrate.ClaimOptions{Lease: lease(ip, 1), LastLook: time.Hour})
			return err
		}},
		{"lease without a namespace", "PrepareNetwork first", func() error { _, err := n.Lease(ctx, good.ID, lease(ip, 1)); return err }},
		{"lease negative ttl", "ttl", func() error {
			_, err := n.Lease(ctx, good.ID, migrate.Lease{IP: ip.Addr(), Generation: 1, TTL: -time.Second})
			return err
		}},
		{"address without a lease", "needs a granted lease", func() error { _, err := n.PrepareNetwork(ctx, good, true); return err }},
		{"probe a long time", "at most", func() error { _, err := n.Probe(ctx, ip.Addr(), "", time.Hour); return err }},
		{"probe bad mac", "Ethernet address", func() error { _, err := n.Probe(ctx, ip.Addr(), "zz", time.Millisecond); return err }},
		{"sentry ipv6", "IPv4", func() error {
			_, err := n.StartSentry(ctx, netip.MustParseAddr("::1"), "", time.Millisecond)
			return err
		}},
		{"stop unknown sentry", "no such sentry", func() error { _, err := n.StopSentry(ctx, "nope"); return err }},
		{"guards of no kind", "want GuardResets", func() error { _, err := n.SetGuards(ctx, good.ID, 0, true); return err }},
		{"guards without a namespace", "PrepareNetwork first", func() error {
			_, err := n.SetGuards(ctx, good.ID, migrate.GuardResets, true)
			return err
		}},
		{"announce 100 rounds", "rounds", func() error {
			_, err := n.Announce(ctx, good.ID, ip.Addr(), migrate.AnnounceOptions{Rounds: 100})
			return err
		}},
	} {
		err := tc.call()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		} else if !strings.Contains(err.Error(), "on h1") {
			t.Errorf("%s: error does not name the host: %v", tc.name, err)
		}
	}
	// Nothing was touched.
	if st := wantStatus(t, n, good.ID, migrate.Absent); st.Network {
		t.Fatalf("a refused step left a namespace: %+v", st)
	}
	if ents, _ := os.ReadDir(n.imageRoot()); len(ents) != 0 {
		t.Fatalf("a refused step left images: %v", ents)
	}
}

// A symbolic link on (shared) storage cannot send an image elsewhere.
func TestImagePathRefusesLinks(t *testing.T) {
	n, err := New(Config{Name: "hx", Containerd: "/run/escape-nowhere.sock", Bridge: "br0", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	out := t.TempDir()
	if err := os.Symlink(out, filepath.Join(n.imageRoot(), "checkpoints")); err != nil {
		t.Fatal(err)
	}
	if _, err := n.imagePath("checkpoints/c1/000001-e1"); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("a path through a link: %v", err)
	}
	if p, err := n.imagePath("migrations/c1/m1"); err != nil || p != filepath.Join(n.imageRoot(), "migrations/c1/m1") {
		t.Fatalf("plain path: %q, %v", p, err)
	}
}

// ServeOffer serves only the host it was offered to, only until it
// expires, and never an unknown ticket; a ticket serves again (a restarted
// transfer) until then.
func TestServeOfferRefuses(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	l := newTestLab(t)
	if !l.inHost(t, "h1") {
		return
	}
	n := l.node(t, "h1", WithClock(clock))
	ctx := testCtx(t)
	tk, err := n.Offer(ctx, migrate.Offer{Kind: migrate.OfferImage, Name: "escape.local/busybox:latest", To: "h2"})
	if err != nil || len(tk) != 64 {
		t.Fatalf("offer: %q, %v", tk, err)
	}
	if err := n.ServeOffer(ctx, tk, "h3", io.Discard); !errors.Is(err, ErrWrongPeer) {
		t.Fatalf("served to h3: %v", err)
	}
	if err := n.ServeOffer(ctx, "00"+tk[2:], "h2", io.Discard); !errors.Is(err, ErrUnknownTicket) {
		t.Fatalf("served an unknown ticket: %v", err)
	}
	for i := 0; i < 2; i++ {
		var w countingWriter
		if err := n.ServeOffer(ctx, tk, "h2", &w); err != nil || w.n < 1000 {
			t.Fatalf("serve %d: %d bytes, %v", i, w.n, err)
		}
	}
	now = now.Add(offerLife)
	if err := n.ServeOffer(ctx, tk, "h2", io.Discard); !errors.Is(err, ErrTicketExpired) {
		t.Fatalf("served an expired ticket: %v", err)
	}
	if err := n.ServeOffer(ctx, tk, "h2", io.Discard); !errors.Is(err, ErrUnknownTicket) {
		t.Fatalf("an expired ticket is not forgotten: %v", err)
	}
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// Offers are bounded; expired ones make room.
func TestOffersBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	n, err := New(Config{Name: "hx", Containerd: "/run/escape-nowhere.sock", Bridge: "br0", StateDir: t.TempDir()},
		WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	dir, _ := n.imagePath("checkpoints/c/1")
	for _, f := range []string{"inventory.img", "pstree.img", "core-1.img", "pages-1.img"} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	what := migrate.Offer{Kind: migrate.OfferCheckpoint, Name: "checkpoints/c/1", To: "h2"}
	for i := 0; i < maxOffers; i++ {
		if _, err := n.Offer(context.Background(), what); err != nil {
			t.Fatalf("offer %d: %v", i, err)
		}
	}
	if _, err := n.Offer(context.Background(), what); err == nil || !strings.Contains(err.Error(), "outstanding") {
		t.Fatalf("offer past the bound: %v", err)
	}
	now = now.Add(offerLife + time.Second)
	if _, err := n.Offer(context.Background(), what); err != nil {
		t.Fatalf("offer once the others expired: %v", err)
	}
	if len(n.offers.m) != 1 {
		t.Fatalf("%d offers kept", len(n.offers.m))
	}
}

// A forgotten sentry is stopped by the node; sentries are bounded.
func TestSentriesExpireAndAreBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := newTestLab(t)
	if !l.inHost(t, "h1") {
		return
	}
	n := l.node(t, "h1", WithClock(clock))
	ctx := testCtx(t)
	ip := netip.MustParseAddr("198.18.1.161")
	id, err := n.StartSentry(ctx, ip, "", 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < maxSentries; i++ {
		if _, err := n.StartSentry(ctx, ip, "", 10*time.Millisecond); err != nil {
			t.Fatalf("sentry %d: %v", i, err)
		}
	}
	if _, err := n.StartSentry(ctx, ip, "", 10*time.Millisecond); err == nil {
		t.Fatal("a sentry past the bound")
	}
	mu.Lock()
	now = now.Add(sentryLife + time.Second)
	mu.Unlock()
	n.expireSentries()
	if _, err := n.StopSentry(ctx, id); err == nil || !strings.Contains(err.Error(), "no such sentry") {
		t.Fatalf("a forgotten sentry still runs: %v", err)
	}
	if len(n.sentry.m) != 0 {
		t.Fatalf("%d sentries left", len(n.sentry.m))
	}
	_ = arp.NetnsExists
}
