package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/tools/lab"
)

// downtimes collects the client-observed gaps of every happy migration,
// for the median the report quotes.
var downtimes struct {
	mu     sync.Mutex
	frozen []time.Duration
	client []time.Duration
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// hop migrates the fixture's container from src to dst and asserts it
// migrated with nothing pending; it returns the new generation.
func (f *labFix) hop(m *migrate.Migrator, src, dst string, gen uint64) migrate.Result {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	before := f.redis.count()
	f.redis.resetGap()
	res, err := m.Migrate(ctx, f.spec, src, dst, gen)
	logResult(f.t, fmt.Sprintf("%s->%s", src, dst), res)
	if err != nil || res.Outcome != migrate.Migrated || res.Pending != "" {
		f.t.Fatalf("migrate %s->%s: %v (%s, pending %q)", src, dst, err, res.Outcome, res.Pending)
	}
	f.redis.waitCount(f.t, before+5, 30*time.Second)
	gap := f.redis.gap()
	f.t.Logf("downtime %s->%s: frozen %v (migrator), longest client gap %v (INCR to INCR on the kept connection), shared %v, transfer %d bytes",
		src, dst, res.Frozen.Round(time.Millisecond), gap.Round(time.Millisecond), res.Record.Shared, res.Transfer.Bytes)
	downtimes.mu.Lock()
	downtimes.frozen = append(downtimes.frozen, res.Frozen)
	downtimes.client = append(downtimes.client, gap)
	downtimes.mu.Unlock()
	f.placement(dst)
	return res
}

// TestLabMigrateHappy moves redis around the lab's hosts, with shared
// storage (the lab's default) and with the dump streamed agent to agent
// (the destination's agent without shared storage), and logs each
// migration's downtime.
func TestLabMigrateHappy(t *testing.T) {
	t.Run("shared", func(t *testing.T) {
		f := newLabFix(t, "lm-happy-shared", 21, "h1")
		m := f.migrator(nil, nil)
		gen := f.gen
		for _, h := range [][2]string{{"h1", "h2"}, {"h2", "h3"}, {"h3", "h1"}} {
			res := f.hop(m, h[0], h[1], gen)
			if !res.Record.Shared || res.Transfer.Bytes != 0 {
				t.Fatalf("hop %v: shared %v, transfer %+v; want the shared storage used", h, res.Record.Shared, res.Transfer)
			}
			gen = res.Record.Generation
		}
		f.finish()
	})
	t.Run("streamed", func(t *testing.T) {
		f := newLabFix(t, "lm-happy-stream", 22, "h1")
		unshare(t, f.inv, "h2")
		i1, i2 := f.hello("h1"), f.hello("h2")
		if i1.SharedStorage == "" || i2.SharedStorage != "" {
			t.Fatalf("shared storage: h1 %q, h2 %q; want h1 only", i1.SharedStorage, i2.SharedStorage)
		}
		m := f.migrator(nil, nil)
		gen := f.gen
		for _, h := range [][2]string{{"h1", "h2"}, {"h2", "h1"}} {
			res := f.hop(m, h[0], h[1], gen)
			if res.Record.Shared || res.Transfer.Bytes == 0 || res.Transfer.Did != "fetched" {
				t.Fatalf("hop %v: shared %v, transfer %+v; want the dump streamed", h, res.Record.Shared, res.Transfer)
			}
			gen = res.Record.Generation
		}
		f.finish()
	})
	downtimes.mu.Lock()
	t.Logf("downtime over %d migrations: median frozen %v, median client gap %v", len(downtimes.client),
		median(downtimes.frozen).Round(time.Millisecond), median(downtimes.client).Round(time.Millisecond))
	downtimes.mu.Unlock()
}

// unshare restarts host's agent without shared storage, and puts its
// configuration and agent back at cleanup.
func unshare(t *testing.T, inv *lab.Inventory, host string) {
	t.Helper()
	h, _ := inv.Host(host)
	orig := readFile(t, h.Config)
	var doc map[string]map[string]any
	if err := yaml.Unmarshal(orig, &doc); err != nil {
		t.Fatal(err)
	}
	delete(doc["agent"], "shared")
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	restart := func(cfg []byte) {
		if err := os.WriteFile(h.Config, cfg, 0o644); err != nil {
			t.Error(err)
		}
		if err := lab.StopAgent(ctx, inv, host); err != nil {
			t.Error(err)
		}
		if err := lab.StartAgent(ctx, inv, host, nil); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { restart(orig) })
	restart(out)
}

// killCase kills one agent when one step of a migration h1->h2 starts.
type killCase struct {
	step   migrate.Step
	victim string // "source" or "dest"
	atOnce bool   // started again within the hook, not after the migration
	// want is the migration's outcome; final the host it runs on once
	// Recover settled it.
	want  migrate.Outcome
	final string
}

// TestLabMigrateAgentKilled kills the source's or the destination's agent
// (SIGKILL: its containers and kernel leases live on) as a step starts,
// starts it again, and settles the migration with Recover.
func TestLabMigrateAgentKilled(t *testing.T) {
	// Every step × both agents, and the destination started again at
	// once. want is what the migration itself ends with, final where the
	// container runs once Recover settled it:
	//
	//   - the source dies before its lease is armed (image, stage,
	//     checkpoint): undone up to the source, which it cannot reach
	//     (Stuck); its copy still serves under its pinned lease;
	//   - the source dies after its dump (prepare and later): the address
	//     moves once its armed lease must have lapsed, and its removal is
	//     left to Recover (Migrated, pending);
	//   - the destination dies before its lease is pinned: undone, its
	//     leftovers removed once it is back (Reverted);
	//   - the destination dies as its lease is to be pinned (commit): it
	//     may hold the address pinned, so nothing moves until it answers
	//     (Stuck; its armed lease lapses meanwhile, so no copy serves);
	//   - committed (announce, remove-source): only forward (Migrated).
	type outcome struct {
		want  migrate.Outcome
		final string
	}
	stuck, reverted, migrated := outcome{migrate.Stuck, "h1"}, outcome{migrate.Reverted, "h1"}, outcome{migrate.Migrated, "h2"}
	expect := map[migrate.Step][2]outcome{ // source, dest
		migrate.StepImage:        {stuck, reverted},
		migrate.StepStage:        {stuck, reverted},
		migrate.StepCheckpoint:   {stuck, reverted},
		migrate.StepPrepare:      {migrated, reverted},
		migrate.StepMoveAddress:  {migrated, reverted},
		migrate.StepRestore:      {migrated, reverted},
		migrate.StepCommit:       {migrated, stuck},
		migrate.StepAnnounce:     {migrated, migrated},
		migrate.StepRemoveSource: {migrated, migrated},
	}
	var cases []killCase
	for s := migrate.StepImage; s <= migrate.StepRemoveSource; s++ {
		e, ok := expect[s]
		if !ok {
			continue // transfer: only without shared storage
		}
		cases = append(cases, killCase{step: s, victim: "source", want: e[0].want, final: e[0].final},
			killCase{step: s, victim: "dest", want: e[1].want, final: e[1].final})
	}
	// Started again within the hook: the restore finds a fresh agent.
	cases = append(cases, killCase{step: migrate.StepRestore, victim: "dest", atOnce: true, want: migrate.Migrated, final: "h2"})
	if os.Getenv("ESCAPE_LAB_QUICK") != "" {
		// A representative subset: one case of each kind above.
		var quick []killCase
		for _, c := range cases {
			switch {
			case c.victim == "source" && (c.step == migrate.StepCheckpoint || c.step == migrate.StepMoveAddress),
				c.victim == "dest" && (c.step == migrate.StepRestore || c.step == migrate.StepCommit || c.step == migrate.StepAnnounce):
				quick = append(quick, c)
			}
		}
		cases = quick
	}
	for i, c := range cases {
		name := fmt.Sprintf("%s-%s", c.step, c.victim)
		if c.atOnce {
			name += "-at-once"
		}
		t.Run(name, func(t *testing.T) {
			f := newLabFix(t, "lm-kill-"+strings.ReplaceAll(name, "-", ""), 30+i, "h1")
			victim := map[string]string{"source": "h1", "dest": "h2"}[c.victim]
			var fired atomic.Bool
			m := f.migrator(nil, nil, migrate.WithHook(func(ctx context.Context, ev migrate.Event) error {
				if ev.Undo || ev.Step != c.step || fired.Swap(true) {
					return nil
				}
				t.Logf("killing the agent of %s (%s) at step %s", victim, c.victim, ev.Step)
				if err := lab.KillAgent(ctx, f.inv, victim); err != nil {
					return err
				}
				if c.atOnce {
					return lab.StartAgent(ctx, f.inv, victim, nil)
				}
				return nil
			}))
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			res, err := m.Migrate(ctx, f.spec, "h1", "h2", f.gen)
			logResult(t, "migrate", res)
			t.Logf("migrate: %v", err)
			if !fired.Load() {
				t.Fatalf("step %s never ran", c.step)
			}
			if c.want != "" && res.Outcome != c.want {
				t.Errorf("outcome %s, want %s", res.Outcome, c.want)
			}
			time.Sleep(500 * time.Millisecond)
			if err := lab.StartAgent(ctx, f.inv, victim, nil); err != nil {
				t.Fatal(err)
			}
			final := f.settle(m)
			if final == "" {
				final = res.Outcome
			}
			where := "h1"
			if final == migrate.Migrated {
				where = "h2"
			}
			if c.final != "" && where != c.final {
				t.Errorf("settled %s on %s, want on %s", final, where, c.final)
			}
			f.placement(where)
			f.finish()
		})
	}
}

// TestLabMigratePlaneLinkCut cuts the link between the plane and the
// destination as a step starts (the destination still reaches its peers
// and clients), and partitions the source off the fabric once the address
// has moved.
func TestLabMigratePlaneLinkCut(t *testing.T) {
	for i, c := range []struct {
		name   string
		step   migrate.Step
		host   string
		cut    func(*lab.Inventory, string) error
		heal   func(*lab.Inventory, string) error
		want   migrate.Outcome
		final  string
		octets int
	}{
		// StartStaged never reaches the destination: undone, the
		// destination's leftovers removed once the link is back.
		{"dest-link-at-restore", migrate.StepRestore, "h2", lab.CutPlaneLink, lab.HealPlaneLink, migrate.Reverted, "h1", 0},
		// The pin never reaches the destination, whose restored copy holds
		// the address under an armed lease: Stuck (its lease lapses, so
		// no copy serves) until the link is back; then undone.
		{"dest-link-at-commit", migrate.StepCommit, "h2", lab.CutPlaneLink, lab.HealPlaneLink, migrate.Stuck, "h1", 0},
		// The source is cut off the fabric once the address is on the
		// destination: migrated, the source's removal left to Recover.
		{"source-partition-after-move", migrate.StepRestore, "h1", lab.Partition, lab.Heal, migrate.Migrated, "h2", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newLabFix(t, "lm-cut-"+c.name, 50+i, "h1")
			var fired atomic.Bool
			m := f.migrator(nil, nil, migrate.WithStepTimeout(8*time.Second), migrate.WithHook(func(ctx context.Context, ev migrate.Event) error {
				if ev.Undo || ev.Step != c.step || fired.Swap(true) {
					return nil
				}
				t.Logf("%s: fault on %s at step %s", c.name, c.host, ev.Step)
				return c.cut(f.inv, c.host)
			}))
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			res, err := m.Migrate(ctx, f.spec, "h1", "h2", f.gen)
			logResult(t, "migrate", res)
			t.Logf("migrate: %v", err)
			if res.Outcome != c.want {
				t.Errorf("outcome %s, want %s", res.Outcome, c.want)
			}
			time.Sleep(time.Second)
			if err := c.heal(f.inv, c.host); err != nil {
				t.Fatal(err)
			}
			f.settle(m)
			f.placement(c.final)
			f.finish()
		})
	}
}

// TestLabMigrateCertExpires gives the migrator a plane certificate that
// expires during the migration: the agents refuse its calls from then on
// (and count the refusal), the migration ends without two copies, and a
// fresh certificate in the same files lets Recover settle it.
func TestLabMigrateCertExpires(t *testing.T) {
	f := newLabFix(t, "lm-cert", 60, "h1")
	dir := filepath.Join(f.dir, "pki")
	notAfter := time.Now().Add(8 * time.Second)
	files, err := f.inv.Issue(mtls.RolePlane, "plane", dir, mtls.WithValidity(time.Now().Add(-time.Minute), notAfter))
	if err != nil {
		t.Fatal(err)
	}
	logBefore := expiredRefusals(t, f.inv, "h1")
	hosts := f.hostsWith(files, zapLogger(t))
	var fired atomic.Bool
	m := f.migrator(hosts, nil, migrate.WithHook(func(ctx context.Context, ev migrate.Event) error {
		if ev.Undo || ev.Step != migrate.StepMoveAddress || fired.Swap(true) {
			return nil
		}
		wait := time.Until(notAfter) + 500*time.Millisecond
		t.Logf("at %s: waiting %v for the plane's certificate to expire", ev.Step, wait.Round(time.Millisecond))
		time.Sleep(wait)
		return nil
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := m.Migrate(ctx, f.spec, "h1", "h2", f.gen)
	logResult(t, "migrate", res)
	t.Logf("migrate: %v", err)
	if !fired.Load() {
		t.Fatal("the migration never reached move-address")
	}
	if res.Outcome == migrate.Migrated || err == nil {
		t.Fatalf("migrated with an expired certificate: %v (%s)", err, res.Outcome)
	}
	h1, _ := hosts.Host("h1")
	if _, err := h1.Hello(ctx); err == nil {
		t.Fatal("a call with the expired certificate was answered")
	} else {
		t.Logf("call with the expired certificate: %v", err)
	}
	if n := expiredRefusals(t, f.inv, "h1"); n <= logBefore {
		t.Errorf("h1's agent logged %d refusals of an expired plane certificate before, %d after", logBefore, n)
	} else {
		t.Logf("h1's agent logged %d refusals of the expired plane certificate", n-logBefore)
	}
	// A fresh certificate in the same files: the source reloads it.
	if _, err := f.inv.Issue(mtls.RolePlane, "plane", dir); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := f.settle(m); got != migrate.Reverted {
		t.Errorf("settled %s, want %s", got, migrate.Reverted)
	}
	f.placement("h1")
	f.finish()
}

// expiredRefusals counts the refusals of an expired plane certificate in
// host's agent log.
func expiredRefusals(t *testing.T, inv *lab.Inventory, host string) int {
	h, _ := inv.Host(host)
	n := 0
	for _, line := range strings.Split(string(readFile(t, h.AgentLog)), "\n") {
		if strings.Contains(line, `"msg":"mtls: refused peer"`) && strings.Contains(line, `"reason":"expired"`) && strings.Contains(line, "plane/plane") {
			n++
		}
	}
	return n
}

// deadJournal is the journal of a plane that crashed: once dead, nothing
// it writes lands.
type deadJournal struct {
	j    migrate.Journal
	dead atomic.Bool
}

var errCrashed = errors.New("the plane crashed")

func (d *deadJournal) PutMigration(ctx context.Context, r migrate.Record) error {
	if d.dead.Load() {
		return errCrashed
	}
	return d.j.PutMigration(ctx, r)
}

func (d *deadJournal) Migrations(ctx context.Context) ([]migrate.Record, error) {
	if d.dead.Load() {
		return nil, errCrashed
	}
	return d.j.Migrations(ctx)
}

func (d *deadJournal) DeleteMigration(ctx context.Context, id string) error {
	if d.dead.Load() {
		return errCrashed
	}
	return d.j.DeleteMigration(ctx, id)
}

// TestLabMigratePlaneRestart crashes the plane as a step starts: its
// context cancelled, its links to the agents cut (its lease renewals
// stop), its journal no longer written; then a new Migrator on the same
// journal (the plane's bbolt store) runs Recover.
func TestLabMigratePlaneRestart(t *testing.T) {
	for i, c := range []struct {
		step migrate.Step
		want migrate.Outcome
		on   string
		// down is how long the plane stays down: long enough, every
		// armed lease has lapsed before Recover.
		down time.Duration
	}{
		{migrate.StepCheckpoint, migrate.Reverted, "h1", 0},
		{migrate.StepMoveAddress, migrate.Reverted, "h1", 0},
		{migrate.StepRestore, migrate.Reverted, "h1", 0},
		{migrate.StepCommit, migrate.Migrated, "h2", 0},
		{migrate.StepCommit, migrate.Migrated, "h2", labTTL + 2*time.Second},
	} {
		name := c.step.String()
		if c.down > 0 {
			name += "-leases-lapsed"
		}
		t.Run(name, func(t *testing.T) {
			f := newLabFix(t, "lm-crash-"+name, 70+i, "h1")
			hosts := f.hostsWith(f.inv.Plane.TLS, zapLogger(t))
			dj := &deadJournal{j: f.store}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			crashed, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
			m1 := f.migrator(hosts, dj, migrate.WithHook(func(hctx context.Context, ev migrate.Event) error {
				if ev.Undo || ev.Step != c.step || dj.dead.Load() {
					return nil
				}
				t.Logf("the plane crashes at step %s", ev.Step)
				cancel()
				dj.dead.Store(true)
				hosts.close()
				close(crashed)
				<-release // the crashed plane never goes on
				return errCrashed
			}))
			t.Cleanup(func() { close(release); <-done })
			go func() {
				defer close(done)
				_, _ = m1.Migrate(ctx, f.spec, "h1", "h2", f.gen)
			}()
			select {
			case <-crashed:
			case <-done:
				t.Fatal("the migration ended before the crash")
			case <-time.After(2 * time.Minute):
				t.Fatal("no crash")
			}
			time.Sleep(c.down)
			m2 := f.migrator(nil, nil)
			if got := f.settle(m2); got != c.want {
				t.Errorf("recovered: %s, want %s", got, c.want)
			}
			f.placement(c.on)
			f.finish()
		})
	}
}
