package plane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/model"
	"go.uber.org/zap"
)

// Plane is the control plane. It reaches hosts only through their agents
// (migrate.Host, over mutual TLS): it has no path, socket or namespace of
// any host.
type Plane struct {
	cfg        Config
	defaults   Policy
	service    netip.Prefix
	subnetBits int

	store   *Store
	audit   *Audit
	hosts   *hostSet
	mig     *migrate.Migrator
	log     *zap.Logger
	now     func() time.Time
	rank    []model.PolicyOption
	migOpts []migrate.Option
	dial    hostDialer

	mu       sync.Mutex
	locks    map[string]chan struct{}
	infos    map[string]hostInfoEntry
	feed     sensorFeed
	metrics  metricsOnce
	adopt    adoptState // under mu
	pods     podCache
	lead     leadership
	follower bool
	sink     func(AuditEvent)
	// actions is what actions under way hold, so that Close waits for
	// them: an action once accepted runs to a settled state whatever its
	// caller does.
	actions sync.WaitGroup
}

// Option tunes a Plane.
type Option func(*Plane)

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(p *Plane) { p.log = l } }

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(p *Plane) { p.now = now } }

// WithRankOptions passes options to model.RankDestinations.
func WithRankOptions(o ...model.PolicyOption) Option {
	return func(p *Plane) { p.rank = append(p.rank, o...) }
}

// WithMigrateOptions passes options to the migrator (timeouts, hooks).
func WithMigrateOptions(o ...migrate.Option) Option {
	return func(p *Plane) { p.migOpts = append(p.migOpts, o...) }
}

// New opens the plane's state and audit log and prepares the links to the
// hosts' agents (they connect lazily). Call Start before serving.
func New(cfg Config, opts ...Option) (*Plane, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Plane{cfg: cfg, log: zap.NewNop(), now: time.Now, locks: map[string]chan struct{}{}}
	for _, o := range opts {
		o(p)
	}
	if !p.follower {
		p.lead.begin("")
	}
	p.defaults = cfg.Defaults.Apply(DefaultPolicy())
	var err error
	if p.service, p.subnetBits, err = cfg.serviceRange(); err != nil {
		return nil, err
	}
	if err := p.open(); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

// open acquires what Close releases; on error the caller closes.
func (p *Plane) open() error {
	var err error
	if p.hosts, err = p.connectHosts(); err != nil {
		return err
	}
	if p.store, err = OpenStore(p.cfg.State, 5*time.Second); err != nil {
		return err
	}
	maxSize, err := ParseSize(p.cfg.AuditMaxSize)
	if err != nil {
		return err
	}
	if p.audit, err = OpenAudit(p.cfg.Audit, WithAuditRotation(int64(maxSize), p.cfg.AuditKeep)); err != nil {
		return err
	}
	from, lazy, err := p.cfg.lazyRestoreFrom()
	if err != nil {
		return err
	}
	mopts := append([]migrate.Option{migrate.WithLogger(p.log), migrate.WithLazyRestore(lazy), migrate.WithLazyFrom(from),
		migrate.WithLeaseTTL(time.Duration(p.cfg.LeaseTTL))}, p.migOpts...)
	p.mig, err = migrate.New(p.hosts, p.store, mopts...)
	return err
}

// Close waits for the actions under way, then releases the store, the
// audit log and the links to the agents.
func (p *Plane) Close() error {
	p.actions.Wait()
	var errs []error
	if p.hosts != nil {
		errs = append(errs, p.hosts.close())
	}
	if p.audit != nil {
		errs = append(errs, p.audit.Close())
	}
	if p.store != nil {
		errs = append(errs, p.store.Close())
	}
	return errors.Join(errs...)
}

// Store exposes the state (read by status and tests).
func (p *Plane) Store() *Store { return p.store }

// Host returns the named host's agent.
func (p *Plane) Host(name string) (migrate.Host, error) {
	h, ok := p.hosts.Host(name)
	if !ok {
		return nil, fmt.Errorf("unknown host %q", name)
	}
	return h, nil
}

func (p *Plane) hostConfig(name string) (HostConfig, bool) { return p.hosts.config(name) }

// lock serialises operations on one container, and admits them only
// while this replica leads.
func (p *Plane) lock(ctx context.Context, id string) (func(), error) {
	if err := p.mayAct(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	ch, ok := p.locks[id]
	if !ok {
		ch = make(chan struct{}, 1)
		p.locks[id] = ch
	}
	p.mu.Unlock()
	select {
	case ch <- struct{}{}:
		if err := p.mayAct(); err != nil { // the lease was lost while it waited
			<-ch
			return nil, err
		}
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("container %s is busy: %w", id, ctx.Err())
	}
}

func (p *Plane) event(ev AuditEvent) {
	NewMetrics(p).observe(ev)
	if err := p.audit.Log(ev); err != nil {
		p.log.Error("audit log", zap.Error(err), zap.Any("event", ev))
	}
	if p.sink != nil {
		p.sink(ev)
	}
}

// Start settles what a previous run left: half-done migrations are
// finished or undone, interrupted rollbacks are redone, dumps cut short are
// dropped, placements are checked against the hosts, and configured
// containers that are not placed yet are deployed.
func (p *Plane) Start(ctx context.Context) error {
	rerr := p.recoverMigrations(ctx)
	if err := p.recoverRollbacks(ctx); err != nil {
		p.log.Error("recovering rollbacks", zap.Error(err))
		rerr = errors.Join(rerr, err)
	}
	p.dropCutDumps(ctx)
	if err := p.reconcile(ctx); err != nil {
		rerr = errors.Join(rerr, err)
	}
	for _, cc := range p.cfg.Containers {
		if _, err := p.store.Container(cc.ID); err == nil {
			continue
		}
		if _, err := p.Deploy(ctx, cc, "config"); err != nil {
			rerr = errors.Join(rerr, fmt.Errorf("deploy %s: %w", cc.ID, err))
		}
	}
	return rerr
}

// recoverMigrations settles the journal's migrations and records where
// each container ended up.
func (p *Plane) recoverMigrations(ctx context.Context) error {
	results, rerr := p.mig.Recover(ctx)
	for _, r := range results {
		ev := AuditEvent{Kind: "action", Action: "recover-migration", Container: r.Record.Spec.ID, Outcome: string(r.Outcome),
			Details: map[string]any{"migration": r.Record.ID, "source": r.Record.Source, "dest": r.Record.Dest,
				"phase": r.Record.Phase, "done": r.Record.Done.String(), "pending": r.Pending}}
		p.event(ev)
		if r.Outcome != migrate.Migrated && r.Outcome != migrate.Reverted {
			continue
		}
		if err := p.placed(r.Record.Spec.ID, r); err != nil {
			rerr = errors.Join(rerr, err)
		}
	}
	if rerr != nil {
		p.log.Error("recovering migrations", zap.Error(rerr))
	}
	return rerr
}

// placed records where a migration left a container, and its lease
// generation.
func (p *Plane) placed(id string, r migrate.Result) error {
	c, err := p.store.Container(id)
	if err != nil {
		return err
	}
	switch r.Outcome {
	case migrate.Migrated:
		c.Host = r.Record.Dest
	case migrate.Reverted:
		c.Host = r.Record.Source
	}
	c.Generation = max(c.Generation, r.Record.Generation)
	c.Updated = p.now()
	return p.store.PutContainer(c)
}

// reportNetworkLocks audits CRIU lock tables found in the namespace of a
// running copy at start: a dump or a restore that was cut short left them,
// and no client reaches the copy until they go. They are reported, not
// removed: a dump the previous plane asked for may still be running, and
// its lock must stay until it ends. A rollback removes them.
func (p *Plane) reportNetworkLocks(ctx context.Context, id string, st migrate.ContainerStatus, host string) {
	if len(st.NetworkLocks) > 0 {
		p.event(AuditEvent{Kind: "decision", Container: id, Host: host, Decision: "none", Outcome: "failed",
			Reasons: []string{fmt.Sprintf("CRIU network lock tables %v in its namespace, left by a dump or restore that was cut short: no client can reach it; a rollback removes them", st.NetworkLocks)}})
	}
}

// reconcile checks each container's placement against the hosts: if it
// runs on exactly one host, that is where it is. A host that does not
// answer is not taken for one without the container.
func (p *Plane) reconcile(ctx context.Context) error {
	cs, err := p.store.Containers()
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cs {
		var running []string
		statuses := map[string]migrate.ContainerStatus{}
		unreachable := 0
		for _, h := range p.hosts.configs() {
			host, _ := p.hosts.Host(h.Name)
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			st, err := host.Status(sctx, c.Spec.ID)
			cancel()
			if err != nil {
				p.log.Warn("reconcile: host unreachable", zap.String("host", h.Name), zap.Error(err))
				unreachable++
				continue
			}
			statuses[h.Name] = st
			if st.Status == migrate.Running {
				running = append(running, h.Name)
			}
		}
		if len(running) == 1 {
			p.reportNetworkLocks(ctx, c.Spec.ID, statuses[running[0]], running[0])
		}
		switch {
		case len(running) == 1 && running[0] != c.Host:
			p.event(AuditEvent{Kind: "action", Action: "reconcile", Container: c.Spec.ID, Host: running[0],
				Reasons: []string{fmt.Sprintf("store placed it on %s but it runs on %s", c.Host, running[0])}, Outcome: "ok"})
			c.Host = running[0]
			c.Updated = p.now()
			errs = append(errs, p.store.PutContainer(c))
		case len(running) == 0 && unreachable == 0:
			p.event(AuditEvent{Kind: "decision", Container: c.Spec.ID, Host: c.Host, Decision: "none",
				Reasons: []string{"no running copy found on any host; use rollback to restore the last safe checkpoint"}, Outcome: "failed"})
		case len(running) == 0:
			p.event(AuditEvent{Kind: "decision", Container: c.Spec.ID, Host: c.Host, Decision: "none",
				Reasons: []string{fmt.Sprintf("no running copy found on the %d hosts that answered; %d did not answer (unreachable is not dead: nothing is started elsewhere)", len(statuses), unreachable)}, Outcome: "failed"})
		case len(running) > 1:
			sort.Strings(running)
			p.event(AuditEvent{Kind: "decision", Container: c.Spec.ID, Decision: "none", Outcome: "failed",
				Reasons: []string{fmt.Sprintf("running on several hosts: %v", running)}})
		}
	}
	return errors.Join(errs...)
}
