package plane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/model"
	"github.com/escape-mtd/escape/tools/lab"
	"go.uber.org/zap"
)

// HostEnv is one host the plane can place containers on.
type HostEnv struct {
	migrate.Host
	Labels map[string]string `json:"labels"`
}

// Environment is the world the plane acts in: hosts, shared storage,
// the service address range and the images.
type Environment struct {
	Hosts []HostEnv
	// Shared is the shared-storage directory every host sees.
	Shared string
	// ServiceRange is where container addresses are allocated; SubnetBits
	// is the prefix length of the L2 segment they sit on.
	ServiceRange netip.Prefix
	SubnetBits   int
	// Images maps image names to root filesystem directories.
	Images map[string]string
}

// EnvironmentFromLab describes a lab from its inventory.
func EnvironmentFromLab(inv *lab.Inventory) Environment {
	env := Environment{Shared: inv.Shared, ServiceRange: inv.ServiceRange, SubnetBits: inv.Subnet.Bits(), Images: map[string]string{}}
	for _, h := range inv.Hosts {
		env.Hosts = append(env.Hosts, HostEnv{
			Host:   migrate.Host{Name: h.Name, Netns: h.Netns, Bridge: h.Bridge, Socket: h.Containerd, Namespace: inv.Namespace, CgroupParent: inv.CgroupParent, RuncRoot: h.RuncRoot, CRIU: h.CRIU},
			Labels: h.Labels,
		})
	}
	for name, img := range inv.Images {
		env.Images[name] = img.RootFS
	}
	return env
}

func (e Environment) validate() error {
	var errs []error
	if len(e.Hosts) == 0 {
		errs = append(errs, errors.New("no hosts"))
	}
	if !filepath.IsAbs(e.Shared) {
		errs = append(errs, fmt.Errorf("shared storage %q: want an absolute path", e.Shared))
	}
	if !e.ServiceRange.IsValid() || !e.ServiceRange.Addr().Is4() || e.ServiceRange.Bits() > 30 {
		errs = append(errs, fmt.Errorf("service range %v: want an IPv4 prefix of at least 4 addresses", e.ServiceRange))
	}
	if e.SubnetBits < 1 || e.SubnetBits > e.ServiceRange.Bits() {
		errs = append(errs, fmt.Errorf("subnet prefix /%d must contain the service range %v", e.SubnetBits, e.ServiceRange))
	}
	return errors.Join(errs...)
}

// Plane is the control plane.
type Plane struct {
	cfg      Config
	env      Environment
	defaults Policy
	dir      string // the plane's directory on shared storage

	releaseMask func() error // unmounts maskDir
	store       *Store
	audit       *Audit
	rt          *migrate.Runtime
	mig         *migrate.Migrator
	log         *zap.Logger
	now         func() time.Time
	rank        []model.PolicyOption
	migOpts     []migrate.Option

	mu      sync.Mutex
	locks   map[string]chan struct{}
	feed    sensorFeed
	metrics metricsOnce
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

// New opens the plane's state and audit log and connects (lazily) to the
// hosts. Call Start before serving.
func New(cfg Config, env Environment, opts ...Option) (*Plane, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := env.validate(); err != nil {
		return nil, fmt.Errorf("environment: %w", err)
	}
	p := &Plane{cfg: cfg, env: env, log: zap.NewNop(), now: time.Now, locks: map[string]chan struct{}{}}
	for _, o := range opts {
		o(p)
	}
	p.defaults = cfg.Defaults.Apply(DefaultPolicy())
	p.dir = cfg.SharedDir
	if p.dir == "" {
		p.dir = filepath.Join(env.Shared, "escape-plane")
	}
	for _, d := range []string{p.dir, p.checkpointRoot(), filepath.Join(p.dir, "rootfs"), filepath.Join(p.dir, "criu")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("plane directory: %w", err)
		}
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
	if p.releaseMask, err = migrate.PrepareMaskDir(p.maskDir()); err != nil {
		return err
	}
	hosts := make([]migrate.Host, 0, len(p.env.Hosts))
	for _, h := range p.env.Hosts {
		hosts = append(hosts, h.Host)
	}
	if p.rt, err = migrate.NewRuntime(hosts, migrate.WithRuntimeLogger(p.log)); err != nil {
		return err
	}
	if p.store, err = OpenStore(p.cfg.State, 5*time.Second); err != nil {
		return err
	}
	if p.audit, err = OpenAudit(p.cfg.Audit); err != nil {
		return err
	}
	from, lazy, err := p.cfg.lazyRestoreFrom()
	if err != nil {
		return err
	}
	mopts := append([]migrate.Option{migrate.WithLogger(p.log), migrate.WithLazyRestore(lazy), migrate.WithLazyFrom(from)}, p.migOpts...)
	p.mig, err = migrate.New(p.rt, p.store, filepath.Join(p.checkpointRoot(), "migrations"), mopts...)
	return err
}

// Close releases the mask directory, the store, the audit log and the
// connections.
func (p *Plane) Close() error {
	var errs []error
	if p.releaseMask != nil {
		errs = append(errs, p.releaseMask())
	}
	if p.rt != nil {
		errs = append(errs, p.rt.Close())
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

// Runtime exposes the container runtime (tests and benchmarks).
func (p *Plane) Runtime() *migrate.Runtime { return p.rt }

func (p *Plane) checkpointRoot() string { return filepath.Join(p.dir, "checkpoints") }

// maskDir is the empty directory restored containers see in place of runc's
// masked directories (migrate.MaskConfig). Containers get it read-only.
func (p *Plane) maskDir() string { return filepath.Join(p.dir, "empty") }

func (p *Plane) hostEnv(name string) (HostEnv, bool) {
	for _, h := range p.env.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return HostEnv{}, false
}

// lock serialises operations on one container.
func (p *Plane) lock(ctx context.Context, id string) (func(), error) {
	p.mu.Lock()
	ch, ok := p.locks[id]
	if !ok {
		ch = make(chan struct{}, 1)
		p.locks[id] = ch
	}
	p.mu.Unlock()
	select {
	case ch <- struct{}{}:
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
}

// Start settles what a previous run left: half-done migrations are
// finished or undone, interrupted rollbacks are redone, placements are
// checked against the hosts, stale checkpoint directories are swept, and
// configured containers that are not placed yet are deployed.
func (p *Plane) Start(ctx context.Context) error {
	results, rerr := p.mig.Recover(ctx)
	for _, r := range results {
		ev := AuditEvent{Kind: "action", Action: "recover-migration", Container: r.Record.Spec.ID, Outcome: string(r.Outcome),
			Details: map[string]any{"migration": r.Record.ID, "source": r.Record.Source, "dest": r.Record.Dest, "phase": r.Record.Phase, "done": r.Record.Done.String()}}
		p.event(ev)
		if c, err := p.store.Container(r.Record.Spec.ID); err == nil {
			switch r.Outcome {
			case migrate.Migrated:
				c.Host = r.Record.Dest
			case migrate.Reverted:
				c.Host = r.Record.Source
			}
			c.Updated = p.now()
			if err := p.store.PutContainer(c); err != nil {
				rerr = errors.Join(rerr, err)
			}
		}
	}
	if rerr != nil {
		p.log.Error("recovering migrations", zap.Error(rerr))
	}
	if err := p.recoverRollbacks(ctx); err != nil {
		p.log.Error("recovering rollbacks", zap.Error(err))
		rerr = errors.Join(rerr, err)
	}
	if err := p.reconcile(ctx); err != nil {
		rerr = errors.Join(rerr, err)
	}
	p.sweepCheckpoints()
	for _, cc := range p.cfg.Containers {
		if _, err := p.store.Container(cc.ID); err == nil {
			continue
		}
		if _, err := p.Deploy(ctx, cc); err != nil {
			rerr = errors.Join(rerr, fmt.Errorf("deploy %s: %w", cc.ID, err))
		}
	}
	return rerr
}

// reportNetworkLocks audits CRIU lock tables found in the namespace of a
// running copy at start: a dump or a restore that was cut short left them,
// and no client reaches the copy until they go. They are reported, not
// removed: a dump the previous plane asked for may still be running, and
// its lock must stay until it ends. A rollback removes them.
func (p *Plane) reportNetworkLocks(id, host string) {
	locks, err := migrate.NetworkLocks(host, id)
	if err != nil {
		p.log.Warn("reconcile: network locks", zap.String("container", id), zap.String("host", host), zap.Error(err))
		return
	}
	if len(locks) > 0 {
		p.event(AuditEvent{Kind: "decision", Container: id, Host: host, Decision: "none", Outcome: "failed",
			Reasons: []string{fmt.Sprintf("CRIU network lock tables %v in its namespace, left by a dump or restore that was cut short: no client can reach it; a rollback removes them", locks)}})
	}
}

// reconcile checks each container's placement against the hosts: if it
// runs on exactly one host, that is where it is.
func (p *Plane) reconcile(ctx context.Context) error {
	cs, err := p.store.Containers()
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cs {
		var running []string
		for _, h := range p.env.Hosts {
			st, err := p.rt.State(ctx, h.Name, c.Spec.ID)
			if err != nil {
				p.log.Warn("reconcile: host unreachable", zap.String("host", h.Name), zap.Error(err))
				continue
			}
			if st == migrate.Running {
				running = append(running, h.Name)
			}
		}
		if len(running) == 1 {
			p.reportNetworkLocks(c.Spec.ID, running[0])
		}
		switch {
		case len(running) == 1 && running[0] != c.Host:
			p.event(AuditEvent{Kind: "action", Action: "reconcile", Container: c.Spec.ID, Host: running[0],
				Reasons: []string{fmt.Sprintf("store placed it on %s but it runs on %s", c.Host, running[0])}, Outcome: "ok"})
			c.Host = running[0]
			c.Updated = p.now()
			errs = append(errs, p.store.PutContainer(c))
		case len(running) == 0:
			p.event(AuditEvent{Kind: "decision", Container: c.Spec.ID, Host: c.Host, Decision: "none",
				Reasons: []string{"no running copy found on any host; use rollback to restore the last safe checkpoint"}, Outcome: "failed"})
		case len(running) > 1:
			sort.Strings(running)
			p.event(AuditEvent{Kind: "decision", Container: c.Spec.ID, Decision: "none", Outcome: "failed",
				Reasons: []string{fmt.Sprintf("running on several hosts: %v", running)}})
		}
	}
	return errors.Join(errs...)
}
