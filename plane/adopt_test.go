package plane

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap/zaptest"
)

// listingHost is an offline host whose agent lists what the test says it
// adopts (or fails to answer), and acts on nothing.
type listingHost struct {
	offlineHost
	mu    sync.Mutex
	found []migrate.Spec
	down  bool
}

func (h *listingHost) Adoptable(context.Context) ([]migrate.Spec, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		return nil, h.err("adoptable")
	}
	return slices.Clone(h.found), nil
}

func (h *listingHost) set(found ...migrate.Spec) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.found = found
}

func adoptingPlane(t *testing.T) (*Plane, map[string]*listingHost) {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Socket, cfg.State, cfg.Audit = filepath.Join(dir, "plane.sock"), filepath.Join(dir, "state.db"), filepath.Join(dir, "audit.jsonl")
	cfg.ServiceRange, cfg.ServicePrefix = "198.18.1.0/24", 15
	hosts := map[string]*listingHost{}
	for _, n := range []string{"h1", "h2"} {
		cfg.Hosts = append(cfg.Hosts, HostConfig{Name: n, Agent: "127.0.0.1:1"})
		hosts[n] = &listingHost{offlineHost: offlineHost{name: n}}
	}
	p, err := New(cfg, WithLogger(zaptest.NewLogger(t)),
		WithHostLinks(func(h HostConfig) (migrate.Host, error) { return hosts[h.Name], nil }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, hosts
}

func userSpec(id, ns, ip string, movable bool, refusals ...string) migrate.Spec {
	s := migrate.Spec{ID: id, Image: "docker.io/library/redis:7", Labels: map[string]string{migrate.AdoptLabel: "true"},
		Adopted: &migrate.Adopted{Namespace: ns, OCISpec: []byte(`{"ociVersion":"1.2.1"}`), Runtime: "io.containerd.runc.v2",
			Status: migrate.Running, Movable: movable, Rollback: true, Refusals: refusals}}
	if ip != "" {
		s.IP, s.MAC = netip.MustParsePrefix(ip), "02:e5:c6:12:01:01"
		s.Adopted.Netns, s.Adopted.Link = "/run/netns/user-"+id, "eth0"
	}
	return s
}

func audited(t *testing.T, p *Plane, want func(AuditEvent) bool) int {
	t.Helper()
	evs, err := ReadAudit(p.cfg.Audit)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs {
		if want(e) {
			n++
		}
	}
	return n
}

func TestAdoptionRounds(t *testing.T) {
	p, hosts := adoptingPlane(t)
	ctx := context.Background()
	db := userSpec("db", "default", "198.18.1.200/15", true)
	db.Labels["escape.mtd/rollback-limit"] = "7"
	out := userSpec("out", "default", "198.19.0.5/15", true) // outside the service range
	bound := userSpec("bound", "default", "", false, "bind mount of host path /srv at /data: it is this host's")
	tty := userSpec("tty", "default", "", false, "it has a terminal")
	tty.Adopted.Rollback = false
	hosts["h1"].set(db, out, bound, tty)
	twin := userSpec("db", "k8s.io", "198.18.1.201/15", true)
	hosts["h2"].set(twin)

	rep := p.AdoptRound(ctx)
	slices.Sort(rep.Adopted)
	if !slices.Equal(rep.Adopted, []string{"bound", "db", "out"}) {
		t.Fatalf("adopted %v, want bound, db, out (%+v)", rep.Adopted, rep)
	}
	if why := rep.Refused["h2/k8s.io/db"]; !strings.Contains(why, "cannot share an id") {
		t.Errorf("the second db (h2, k8s.io): %q", why)
	}
	if why := rep.Refused["h1/default/tty"]; !strings.Contains(why, "neither moved nor rolled back") || !strings.Contains(why, "terminal") {
		t.Errorf("tty: %q", why)
	}
	rec, err := p.store.Container("db")
	if err != nil || !rec.Adopted || rec.Host != "h1" || rec.Policy.RollbackLimit != 7 || !rec.Spec.Adopted.Movable {
		t.Fatalf("db's record: %+v %v", rec, err)
	}
	orec, _ := p.store.Container("out")
	if orec.Spec.Adopted.Movable || !strings.Contains(strings.Join(orec.Spec.Adopted.Refusals, ";"), "outside the service range") {
		t.Errorf("an address outside the service range stays movable: %+v", orec.Spec.Adopted)
	}
	if _, err := p.mig.Migrate(ctx, orec.Spec, "h1", "h2", 1); err == nil || !strings.Contains(err.Error(), "rolled back in place only") {
		t.Errorf("migration of an unmovable adopted container: %v", err)
	}

	// Again: nothing new, and no refusal audited twice.
	if rep := p.AdoptRound(ctx); len(rep.Adopted)+len(rep.Released) != 0 {
		t.Fatalf("second round: %+v", rep)
	}
	if n := audited(t, p, func(e AuditEvent) bool { return e.Decision == "refuse" && e.Container == "tty" }); n != 1 {
		t.Errorf("the tty refusal audited %d times, want once", n)
	}

	// A host that does not answer releases nothing.
	hosts["h1"].mu.Lock()
	hosts["h1"].down = true
	hosts["h1"].mu.Unlock()
	if rep := p.AdoptRound(ctx); len(rep.Released) != 0 || !slices.Contains(rep.Unanswered, "h1") {
		t.Fatalf("round with h1 silent: %+v", rep)
	}
	hosts["h1"].mu.Lock()
	hosts["h1"].down = false
	hosts["h1"].mu.Unlock()

	// out lost its label: released; db's twin on h2 is now free to be
	// refused still (db stays adopted on h1).
	hosts["h1"].set(db, bound)
	rep = p.AdoptRound(ctx)
	if !slices.Equal(rep.Released, []string{"out"}) {
		t.Fatalf("released %v, want out", rep.Released)
	}
	if _, err := p.store.Container("out"); !errors.Is(err, ErrNotFound) {
		t.Errorf("out's record after its release: %v", err)
	}
	if audited(t, p, func(e AuditEvent) bool { return e.Action == "release" && e.Container == "out" && e.Outcome == "ok" }) != 1 {
		t.Error("out's release is not audited")
	}

	// An operator's Remove releases bound without touching its host (the
	// host is offline: any call would fail), and it is not adopted again
	// until its label goes and comes back.
	if err := p.Remove(ctx, "bound", "test"); err != nil {
		t.Fatalf("remove of an adopted container: %v", err)
	}
	if rep := p.AdoptRound(ctx); slices.Contains(rep.Adopted, "bound") {
		t.Fatal("bound adopted again after the operator released it")
	}
	hosts["h1"].set(db)
	p.AdoptRound(ctx)
	hosts["h1"].set(db, bound)
	if rep := p.AdoptRound(ctx); !slices.Contains(rep.Adopted, "bound") {
		t.Fatalf("bound not adopted once its label came back: %+v", rep)
	}

	// An id a deployed container has is refused.
	if err := p.store.PutContainer(ContainerRecord{Spec: migrate.Spec{ID: "web"}, Host: "h2", Policy: DefaultPolicy()}); err != nil {
		t.Fatal(err)
	}
	hosts["h1"].set(db, bound, userSpec("web", "default", "", false, "shares the host's network"))
	if why := p.AdoptRound(ctx).Refused["h1/default/web"]; !strings.Contains(why, "ESCAPE deployed") {
		t.Errorf("an adopted id that a deployed container has: %q", why)
	}
	// An invalid id is refused, not stored.
	hosts["h1"].set(db, bound, userSpec("Bad_ID", "default", "", false, "x"))
	if why := p.AdoptRound(ctx).Refused["h1/default/Bad_ID"]; !strings.Contains(why, "invalid container id") {
		t.Errorf("an invalid id: %q", why)
	}
}

func TestAdoptConfig(t *testing.T) {
	cfg := DefaultConfig()
	if time := cfg.Adopt.Interval; time <= 0 {
		t.Fatalf("default adopt interval %v", time)
	}
	cfg.Hosts = []HostConfig{{Name: "h1", Agent: "127.0.0.1:1"}}
	cfg.ServiceRange = "198.18.1.0/24"
	cfg.ServicePrefix = 15
	cfg.Adopt.Interval = Duration(1)
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "adopt.interval") {
		t.Fatalf("an interval of 1ns: %v", err)
	}
	cfg.Adopt.Off = true
	if err := cfg.Validate(); err != nil {
		t.Fatalf("adoption off with any interval: %v", err)
	}
}
