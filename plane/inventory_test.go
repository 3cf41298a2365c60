package plane

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap/zaptest"
)

// The inventory changes under a running plane: hosts come, change their
// labels, move their agent and go, each change audited; an invalid
// inventory changes nothing.
func TestSetHostsChangesTheInventory(t *testing.T) {
	p, _ := offlinePlane(t)
	dialed := 0
	p.hosts.dial = func(h HostConfig) (migrate.Host, error) { dialed++; return offlineHost{name: h.Name}, nil }
	err := p.SetHosts([]HostConfig{{Name: "h1", Agent: "127.0.0.1:1", Labels: map[string]string{"datacenter": "h1"}},
		{Name: "h3", Agent: "127.0.0.1:3"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(p.Hosts()); got != "h1,h3" {
		t.Fatalf("hosts %s, want h1,h3", got)
	}
	if dialed != 1 {
		t.Errorf("%d links opened, want 1 (h3's; h1's is kept)", dialed)
	}
	if _, err := p.Host("h2"); err == nil {
		t.Error("h2 left the inventory but the plane still reaches it")
	}
	if _, err := p.Flag("h2", true, "gone", "test"); err == nil {
		t.Error("flagging h2, gone, succeeded")
	}
	if err := p.SetHosts([]HostConfig{{Name: "h1", Agent: "127.0.0.1:9", Labels: map[string]string{"datacenter": "dc9"}}}); err != nil {
		t.Fatal(err)
	}
	if h, _ := p.hostConfig("h1"); h.Agent != "127.0.0.1:9" || h.Labels["datacenter"] != "dc9" {
		t.Errorf("h1 after its agent moved: %+v", h)
	}
	if dialed != 2 {
		t.Errorf("%d links opened, want 2 (h1's agent moved)", dialed)
	}
	err = p.SetHosts([]HostConfig{{Name: "Bad Name", Agent: "x"}, {Name: "h1", Agent: "127.0.0.1:9"}})
	if err == nil || !strings.Contains(err.Error(), "Bad Name") {
		t.Fatalf("invalid inventory: %v", err)
	}
	if got := names(p.Hosts()); got != "h1" {
		t.Errorf("an invalid inventory changed it to %s", got)
	}
	evs, err := ReadAudit(p.cfg.Audit)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Kind == "config" && ev.Action == "inventory" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d inventory changes audited, want 2", n)
	}
}

func names(hs []HostConfig) string {
	var s []string
	for _, h := range hs {
		s = append(s, h.Name)
	}
	return strings.Join(s, ",")
}

// A follower refuses every action with the leader's name, over the API
// too (503), and serves its status; Lead makes it act, Follow stops it.
func TestFollowerRefusesActions(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Socket, cfg.State, cfg.Audit = filepath.Join(dir, "run", "plane.sock"), filepath.Join(dir, "state.db"), filepath.Join(dir, "audit.jsonl")
	cfg.ServiceRange = "198.18.1.0/24"
	cfg.Hosts = []HostConfig{{Name: "h1", Agent: "127.0.0.1:1"}}
	p, err := New(cfg, WithLogger(zaptest.NewLogger(t)), WithFollower(),
		WithHostLinks(func(h HostConfig) (migrate.Host, error) { return offlineHost{name: h.Name}, nil }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	ctx := context.Background()
	_, err = p.Flag("h1", true, "x", "test")
	if !errors.Is(err, ErrNotLeader) || !strings.Contains(err.Error(), "not the leader (leader is not known yet)") {
		t.Fatalf("flag on a follower: %v", err)
	}
	p.Follow("plane-1")
	_, err = p.Rollback(ctx, "c1", nil, "test")
	if !errors.Is(err, ErrNotLeader) || !strings.Contains(err.Error(), "leader is plane-1") {
		t.Fatalf("rollback on a follower: %v", err)
	}
	if rep := p.AdoptRound(ctx); len(rep.Adopted)+len(rep.Unanswered) != 0 {
		t.Errorf("a follower ran an adoption round: %+v", rep)
	}
	serveAPI(t, p, cfg)
	c := NewClient(cfg.Socket)
	var st Status
	if err := c.Do(ctx, "GET", "/v1/status", nil, &st); err != nil {
		t.Fatalf("status on a follower: %v", err)
	}
	if st.Leading || st.Leader != "plane-1" {
		t.Errorf("status: leading %v, leader %q", st.Leading, st.Leader)
	}
	err = c.Do(ctx, "POST", "/v1/flag", HostRequest{Host: "h1", Reason: "x"}, nil)
	if err == nil || !strings.Contains(err.Error(), "not the leader (leader is plane-1)") {
		t.Fatalf("flag over the API on a follower: %v", err)
	}
	if err := p.Lead(ctx, "plane-0"); err != nil {
		t.Fatalf("lead: %v", err)
	}
	actx, cancel := p.actionContext(ctx)
	defer cancel()
	if _, err := p.Flag("h1", true, "x", "test"); err != nil {
		t.Fatalf("flag on the leader: %v", err)
	}
	p.Follow("")
	// The cancellation runs on its own goroutine (context.AfterFunc).
	select {
	case <-actx.Done():
	case <-time.After(10 * time.Second):
		t.Error("losing the lease did not cancel the term's action")
	}
	if _, err := p.Flag("h1", false, "x", "test"); !errors.Is(err, ErrNotLeader) {
		t.Errorf("flag after losing the lease: %v", err)
	}
}
