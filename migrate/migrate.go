package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Hosts finds a host's agent by name.
type Hosts interface {
	Host(name string) (Host, bool)
}

// HostMap is Hosts over a fixed set.
type HostMap map[string]Host

// Host returns the named host.
func (m HostMap) Host(name string) (Host, bool) {
	h, ok := m[name]
	return h, ok
}

// Migrator runs migrations between hosts, each a sequence of steps on the
// source's and the destination's agents, journalled before and after each
// one so that a plane that crashes can finish or undo it.
type Migrator struct {
	hosts     Hosts
	j         Journal
	log       *zap.Logger
	hook      Hook
	timeout   time.Duration
	probe     time.Duration
	last      time.Duration
	repeats   int
	interval  time.Duration
	preflight time.Duration
	leaseTTL  time.Duration
	skew      time.Duration
	stage     bool
	lazy      bool
	lazyFrom  uint64
	paused    bool
	now       func() time.Time
	// fences are, per host, by when the requests it left unanswered have
	// landed or can no longer land (fence.go).
	fences fences
}

// Option tunes a Migrator.
type Option func(*Migrator)

// WithLogger sets the logger.
func WithLogger(l *zap.Logger) Option { return func(m *Migrator) { m.log = l } }

// WithHook installs a fault-injection hook.
func WithHook(h Hook) Option { return func(m *Migrator) { m.hook = h } }

// WithStepTimeout bounds each step (default 2 min).
func WithStepTimeout(d time.Duration) Option { return func(m *Migrator) { m.timeout = d } }

// WithProbe sets how long the destination's segment is probed for another
// owner of the address (default 50 ms; 0 disables the probe). A staged
// migration probes while the source is dumped, for the whole dump and at
// least d, and then takes a last look (WithLastLook) as the destination
// claims the address; otherwise the claim probes for d.
func WithProbe(d time.Duration) Option { return func(m *Migrator) { m.probe = d } }

// WithLastLook sets how long a staged migration's destination listens for
// another owner of the address just before it takes it (default 10 ms: a
// station on the segment answers an ARP probe within a millisecond; 0
// disables it).
func WithLastLook(d time.Duration) Option { return func(m *Migrator) { m.last = d } }

// WithPreflight sets how long the destination host listens for a stranger
// owning the address before the dump (default 200 ms; 0 disables).
func WithPreflight(d time.Duration) Option { return func(m *Migrator) { m.preflight = d } }

// WithAnnounce sets the gratuitous ARP rounds and their interval (default
// 3 rounds, 1.1 s apart).
func WithAnnounce(rounds int, interval time.Duration) Option {
	return func(m *Migrator) { m.repeats, m.interval = rounds, interval }
}

// WithLeaseTTL sets how long an armed address lease lasts without renewal
// (default 10 s): what a host that stops answering mid-migration costs,
// since the address moves only once that host's lease must have lapsed.
func WithLeaseTTL(d time.Duration) Option { return func(m *Migrator) { m.leaseTTL = d } }

// WithClockSkew sets how far the hosts' clocks may be from the plane's
// (default 1 s): a grant's wall-clock deadline (Lease.NotAfter) counts as
// passed only this much later.
func WithClockSkew(d time.Duration) Option { return func(m *Migrator) { m.skew = d } }

// WithStaging says whether the destination is staged before the source is
// frozen (default true): its namespace, interface, container object and a
// restore task that is created but not started, so that the frozen window
// holds only the dump, the address move and runc's restore.
func WithStaging(on bool) Option { return func(m *Migrator) { m.stage = on } }

// WithPausedDump makes the dump go through containerd's client
// Task.Checkpoint, which pauses the task first (default false). For
// measurements.
func WithPausedDump(on bool) Option { return func(m *Migrator) { m.paused = on } }

// WithLazyRestore sets whether staged migrations restore memory lazily on
// a destination that can (HostInfo.LazyRestore; default true).
func WithLazyRestore(on bool) Option { return func(m *Migrator) { m.lazy = on } }

// DefaultLazyFrom is the memory from which a staged migration restores
// lazily. Below it the daemon's start and the copy's hold cost more frozen
// time than faulting the pages in saves (planebench, BENCHMARKS.md,
// issue 5: 1 MiB 470–538 against 431–456 ms, 16 MiB 465 against 496, 64
// MiB 499 against 667).
const DefaultLazyFrom = 16 << 20

// WithLazyFrom sets the memory of the source copy from which a staged
// migration restores lazily (default DefaultLazyFrom; 0: always).
func WithLazyFrom(bytes uint64) Option { return func(m *Migrator) { m.lazyFrom = bytes } }

// New returns a migrator over hosts that keeps its journal in j.
func New(hosts Hosts, j Journal, opts ...Option) (*Migrator, error) {
	if hosts == nil || j == nil {
		return nil, errors.New("migrator: hosts and journal are required")
	}
	m := &Migrator{hosts: hosts, j: j, log: zap.NewNop(), timeout: 2 * time.Minute, probe: 50 * time.Millisecond,
		last: 10 * time.Millisecond, preflight: 200 * time.Millisecond, repeats: 3, interval: 1100 * time.Millisecond,
		leaseTTL: 10 * time.Second, skew: time.Second, stage: true, lazy: true, lazyFrom: DefaultLazyFrom, now: time.Now}
	for _, o := range opts {
		o(m)
	}
	if m.leaseTTL < 100*time.Millisecond {
		return nil, fmt.Errorf("migrator: lease TTL %v: want at least 100ms", m.leaseTTL)
	}
	if m.skew < 0 {
		return nil, fmt.Errorf("migrator: clock skew %v: negative", m.skew)
	}
	return m, nil
}

// LeaseTTL is how long an armed lease lasts without renewal.
func (m *Migrator) LeaseTTL() time.Duration { return m.leaseTTL }

// run is one migration in flight.
type run struct {
	m        *Migrator
	rec      Record
	res      Result
	src, dst Host
	// srcLease and dstLease renew the armed leases while the handoff
	// runs; each is halted once its lease is pinned or revoked.
	srcLease, dstLease *renewal
	// dstLapse is by when the destination's armed lease has lapsed if it
	// was granted and never confirmed.
	dstLapse time.Time
	// frozenStart is when the dump began.
	frozenStart time.Time
}

func (r *run) save(ctx context.Context) error {
	r.rec.Updated = r.m.now()
	if err := r.m.j.PutMigration(context.WithoutCancel(ctx), r.rec); err != nil {
		return fmt.Errorf("journal migration %s: %w", r.rec.ID, err)
	}
	return nil
}

// do runs one step (or the undo of one). The record is journalled first,
// and the step's calls are bounded by that write plus the step timeout: a
// plane that recovers after a crash knows by when every request this step
// sent has landed or been refused (RecoverOne).
func (r *run) do(ctx context.Context, step Step, undo bool, fn func(context.Context) error) error {
	base := r.m.now()
	if err := r.save(ctx); err != nil {
		return fmt.Errorf("step %s: %w", step, err)
	}
	sctx, cancel := context.WithDeadline(ctx, base.Add(r.m.timeout))
	defer cancel()
	start := time.Now()
	var err error
	if r.m.hook != nil {
		err = r.m.hook(sctx, Event{Step: step, Undo: undo, Record: r.rec})
	}
	if err == nil {
		err = fn(sctx)
	}
	t := Timing{Step: step, Undo: undo, Duration: time.Since(start)}
	if err != nil {
		t.Err = err.Error()
	}
	r.res.Steps = append(r.res.Steps, t)
	r.m.log.Info("migration step", zap.String("container", r.rec.Spec.ID), zap.String("migration", r.rec.ID),
		zap.Stringer("step", step), zap.Bool("undo", undo), zap.Duration("took", t.Duration), zap.Error(err))
	if err != nil {
		what := "step"
		if undo {
			what = "undo"
		}
		return fmt.Errorf("%s %s: %w", what, step, err)
	}
	return nil
}

func (m *Migrator) host(name string) (Host, error) {
	h, ok := m.hosts.Host(name)
	if !ok {
		return nil, fmt.Errorf("unknown host %q", name)
	}
	return fencedHost{h: h, m: m}, nil
}

// Migrate moves the container described by spec from source to dest.
// generation is the lease generation the container's address holds on
// source now; Result.Record.Generation is the one it holds where it ends.
// On any failure before the destination's copy is committed, every step
// done is undone and the container runs on the source again (Outcome
// Reverted, with the error). The journal holds the migration until it is
// settled.
func (m *Migrator) Migrate(ctx context.Context, spec Spec, source, dest string, generation uint64) (Result, error) {
	if err := spec.Validate(); err != nil {
		return Result{}, err
	}
	if err := spec.Movable(); err != nil {
		return Result{}, fmt.Errorf("migrate %s: %w", spec.ID, err)
	}
	if source == dest {
		return Result{}, fmt.Errorf("migrate %s: source and destination are both %s", spec.ID, source)
	}
	src, err := m.host(source)
	if err != nil {
		return Result{}, fmt.Errorf("migrate %s: source: %w", spec.ID, err)
	}
	dst, err := m.host(dest)
	if err != nil {
		return Result{}, fmt.Errorf("migrate %s: destination: %w", spec.ID, err)
	}
	recs, err := m.j.Migrations(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("migrate %s: %w", spec.ID, err)
	}
	for _, r := range recs {
		if r.Spec.ID == spec.ID {
			return Result{}, fmt.Errorf("migrate %s: migration %s (%s) is unsettled; recover it first", spec.ID, r.ID, r.Phase)
		}
	}
	st, err := src.Status(ctx, spec.ID)
	if err != nil {
		return Result{}, fmt.Errorf("migrate %s: %w", spec.ID, err)
	}
	if st.Status != Running {
		return Result{}, fmt.Errorf("migrate %s: not running on %s (%s)", spec.ID, source, st.Status)
	}
	srcInfo, err := src.Hello(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("migrate %s: %w", spec.ID, err)
	}
	dstInfo, err := dst.Hello(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("migrate %s: destination unreachable: %w", spec.ID, err)
	}
	now := m.now()
	id := strings.ToLower(now.UTC().Format("20060102T150405.000000000"))
	r := &run{m: m, src: src, dst: dst, rec: Record{ID: id, Spec: spec, Source: source, Dest: dest,
		Image: MigrationImage(spec.ID, id), Phase: PhaseForward, Started: now, Generation: generation,
		Shared: srcInfo.SharedStorage != "" && srcInfo.SharedStorage == dstInfo.SharedStorage}}
	r.rec.Lazy = m.stage && m.lazy && dstInfo.LazyRestore && (m.lazyFrom == 0 || st.MemoryBytes == 0 || st.MemoryBytes >= m.lazyFrom)
	r.res.Record = r.rec
	if err := r.save(ctx); err != nil {
		return r.res, err
	}
	defer r.halt()
	return r.forward(ctx)
}

// halt stops every renewal (the leases are pinned or revoked by then, or
// left to lapse on purpose).
func (r *run) halt() {
	r.srcLease.halt()
	r.dstLease.halt()
}

// guards are what the destination's namespace holds from its staging to
// the commit: no reset leaves it (between the address's arrival and the
// restore of the sockets, the kernel would answer a client's
// retransmission with one), and no packet reaches the restored copy until
// its lease is pinned. Until then the migration can still be undone, and a
// copy that never served loses nothing when it is thrown away.
func (r *run) guards() Guards { return GuardResets | GuardHold }

// forward runs the steps; any failure reverts.
func (r *run) forward(ctx context.Context) (Result, error) {
	m, spec := r.m, r.rec.Spec
	var sentry SentryID
	stopSentry := func(ctx context.Context) error {
		if sentry == "" {
			return nil
		}
		res, err := r.dst.StopSentry(ctx, sentry)
		sentry = ""
		if err != nil {
			return fmt.Errorf("probe %s on %s: %w", spec.IP.Addr(), r.rec.Dest, err)
		}
		if res.Taken {
			return fmt.Errorf("%w: %s answers from %s on %s", ErrAddressTaken, spec.IP.Addr(), res.By, r.rec.Dest)
		}
		return nil
	}
	defer func() { _ = stopSentry(context.WithoutCancel(ctx)) }()
	steps := []stepFn{
		{StepImage, func(ctx context.Context) error { return r.ensureImage(ctx) }},
	}
	if m.stage {
		steps = append(steps, stepFn{StepStage, func(ctx context.Context) error {
			if err := r.clearDest(ctx); err != nil {
				return err
			}
			// Journalled before anything exists on the destination, so
			// that a crash from here on leads to its removal.
			r.rec.Staged = true
			if err := r.save(ctx); err != nil {
				return err
			}
			_, err := r.dst.Stage(ctx, spec, r.rec.Image, StageOptions{Guards: r.guards()})
			return err
		}})
	}
	steps = append(steps,
		stepFn{StepCheckpoint, func(ctx context.Context) error {
			// Armed before the freeze: from here on, a source that stops
			// answering fences its own address within the TTL.
			var err error
			if r.srcLease, err = m.armLease(ctx, r.src, spec.ID, Lease{IP: spec.IP.Addr(), Generation: r.rec.Generation, TTL: m.leaseTTL}); err != nil {
				return err
			}
			if m.preflight > 0 {
				if err := r.preflightProbe(ctx); err != nil {
					return err
				}
			}
			if m.stage && m.probe > 0 {
				if sentry, err = r.dst.StartSentry(ctx, spec.IP.Addr(), spec.MAC, m.probe); err != nil {
					return fmt.Errorf("probe %s on %s: %w", spec.IP.Addr(), r.rec.Dest, err)
				}
			}
			r.frozenStart = time.Now()
			res, err := r.src.Checkpoint(ctx, spec.ID, r.rec.Image, CheckpointOptions{Exit: true, Paused: m.paused, RootFS: true})
			if err != nil {
				return err
			}
			r.res.CRIU = res.CRIU
			return nil
		}},
	)
	if !r.rec.Shared {
		steps = append(steps, stepFn{StepTransfer, func(ctx context.Context) error { return r.transfer(ctx) }})
	}
	steps = append(steps,
		stepFn{StepPrepare, func(ctx context.Context) error {
			if m.stage {
				// Staged before the dump, probed during it: a stranger on
				// the destination's segment, or a staged copy that died
				// since, fails here, before the address moves.
				probed := stopSentry(ctx)
				st, err := r.dst.Status(ctx, spec.ID)
				if err == nil && st.Status != Created {
					err = fmt.Errorf("staged copy on %s is %s, want created", r.rec.Dest, st.Status)
				}
				return errors.Join(probed, err)
			}
			if err := r.clearDest(ctx); err != nil {
				return err
			}
			r.rec.Staged = true
			if err := r.save(ctx); err != nil {
				return err
			}
			if _, err := r.dst.PrepareNetwork(ctx, spec, false); err != nil {
				return err
			}
			_, err := r.dst.SetGuards(ctx, spec.ID, r.guards(), true)
			return err
		}},
		stepFn{StepMoveAddress, func(ctx context.Context) error { return r.moveAddress(ctx) }},
		stepFn{StepRestore, func(ctx context.Context) error {
			var res RestoreResult
			var err error
			if m.stage {
				res, err = r.dst.StartStaged(ctx, spec, r.rec.Image, StartStagedOptions{Lazy: r.rec.Lazy})
			} else {
				res, err = r.dst.Restore(ctx, spec, r.rec.Image, RestoreOptions{Fresh: true})
			}
			if err != nil {
				return err
			}
			r.res.Lazy = res.Lazy
			r.res.CRIU.Forking, r.res.CRIU.Restore = res.CRIU.Forking, res.CRIU.Restore
			if r.rec.Lazy {
				r.rec.LazyDone = true
				if err := r.save(ctx); err != nil {
					return err
				}
			}
			st, err := r.dst.Status(ctx, spec.ID)
			if err != nil {
				return err
			}
			if st.Status != Running {
				return fmt.Errorf("restored copy on %s is %s", r.rec.Dest, st.Status)
			}
			return nil
		}},
		stepFn{StepCommit, func(ctx context.Context) error { return r.pinDest(ctx) }},
	)
	if err := r.runSteps(ctx, steps); err != nil {
		return r.revert(ctx, err)
	}
	return r.commit(ctx)
}

type stepFn struct {
	step Step
	fn   func(context.Context) error
}

// runSteps runs steps in order, journalling each one done.
func (r *run) runSteps(ctx context.Context, steps []stepFn) error {
	for _, s := range steps {
		if err := r.do(ctx, s.step, false, s.fn); err != nil {
			r.rec.Error = err.Error()
			return err
		}
		r.rec.Done = s.step
		if err := r.save(ctx); err != nil {
			// The journal is the only way to recover from a crash: without
			// it, do not go further.
			return err
		}
	}
	return nil
}

// commit ends a migration whose destination's lease is pinned: from here
// on it only goes forward. The copy is let serve, announced, and the
// source's copy and the dumps are removed. What fails here is retried by
// Recover; nothing is undone.
func (r *run) commit(ctx context.Context) (Result, error) {
	spec := r.rec.Spec
	if err := r.do(ctx, StepAnnounce, false, func(ctx context.Context) error {
		if _, err := r.dst.SetGuards(ctx, spec.ID, r.guards(), false); err != nil {
			return fmt.Errorf("let the copy serve: %w", err)
		}
		if !r.frozenStart.IsZero() {
			r.res.Frozen = time.Since(r.frozenStart)
		}
		if err := r.announce(ctx, r.dst); err != nil {
			r.m.log.Warn("announce after migration", zap.String("container", spec.ID), zap.Error(err))
		}
		return nil
	}); err != nil {
		// The copy is held until its guards go: keep the journal so that
		// Recover lifts them.
		r.rec.Error = err.Error()
		r.res.Outcome = Migrated
		r.res.Pending = "the destination's copy is held until its guards are lifted: " + err.Error()
		_ = r.save(ctx)
		r.res.Record = r.rec
		return r.res, nil
	}
	r.rec.Done = StepAnnounce
	return r.finish(ctx)
}

// ensureImage makes sure the destination has the container's image:
// pulled from its registry, or else imported from the source's agent.
func (r *run) ensureImage(ctx context.Context) error {
	ref := r.rec.Spec.Image
	pulled, err := r.dst.EnsureImage(ctx, ref, nil)
	if err == nil {
		r.m.log.Debug("destination image", zap.String("image", ref), zap.String("did", pulled.Did))
		return nil
	}
	t, oerr := r.src.Offer(ctx, Offer{Kind: OfferImage, Name: ref, To: r.rec.Dest})
	if oerr != nil {
		return fmt.Errorf("image %s on %s: %v; and the source cannot offer it: %w", ref, r.rec.Dest, err, oerr)
	}
	if _, ierr := r.dst.EnsureImage(ctx, ref, &Peer{Name: r.rec.Source, Address: peerAddress(r.src), Ticket: t}); ierr != nil {
		return fmt.Errorf("image %s on %s: pull: %v; import from %s: %w", ref, r.rec.Dest, err, r.rec.Source, ierr)
	}
	return nil
}

// transfer has the destination fetch the dump from the source.
func (r *run) transfer(ctx context.Context) error {
	t, err := r.src.Offer(ctx, Offer{Kind: OfferCheckpoint, Name: string(r.rec.Image), To: r.rec.Dest})
	if err != nil {
		return err
	}
	res, err := r.dst.Fetch(ctx, r.rec.Image, Peer{Name: r.rec.Source, Address: peerAddress(r.src), Ticket: t})
	if err != nil {
		return err
	}
	r.res.Transfer = res
	return nil
}

// addressed is a host whose agent has a network address other agents can
// dial.
type addressed interface{ Address() string }

func peerAddress(h Host) string {
	if a, ok := h.(addressed); ok {
		return a.Address()
	}
	return ""
}

// preflightProbe runs before anything is frozen: does a stranger already
// answer for the address on the destination's segment?
func (r *run) preflightProbe(ctx context.Context) error {
	res, err := r.dst.Probe(ctx, r.rec.Spec.IP.Addr(), r.rec.Spec.MAC, r.m.preflight)
	if err != nil {
		return fmt.Errorf("preflight probe: %w", err)
	}
	if res.Taken {
		return fmt.Errorf("preflight probe: %w: %v answers from %s on %s", ErrAddressTaken, r.rec.Spec.IP.Addr(), res.By, r.rec.Dest)
	}
	return nil
}

// clearDest refuses a destination that already runs a copy and removes a
// dead leftover of an earlier attempt.
func (r *run) clearDest(ctx context.Context) error {
	st, err := r.dst.Status(ctx, r.rec.Spec.ID)
	if err != nil {
		return err
	}
	switch st.Status {
	case Absent:
		if !st.Network {
			return nil
		}
	case Running, Paused:
		return fmt.Errorf("a live copy of %s already runs on %s", r.rec.Spec.ID, r.rec.Dest)
	}
	if _, err := r.dst.Remove(ctx, r.rec.Spec.ID); err != nil {
		return fmt.Errorf("remove leftover on destination: %w", err)
	}
	return nil
}

// moveAddress takes the address from the source and gives it to the
// destination, under an armed lease there until the copy is committed.
// If the source does not answer, the address moves only once the source's
// lease must have lapsed.
func (r *run) moveAddress(ctx context.Context) error {
	spec := r.rec.Spec
	if _, err := r.src.ReleaseAddress(ctx, spec.ID, spec.IP); err != nil {
		if !errors.Is(err, ErrUnreachable) {
			return err
		}
		r.m.waitLapse(ctx, r.rec.Source, spec.ID, r.srcLease.halt())
	}
	r.srcLease.halt()
	gen, err := r.nextGeneration(ctx)
	if err != nil {
		return err
	}
	look := r.m.probe
	if r.m.stage {
		look = r.m.last
	}
	r.rec.DestClaimed = true
	if err := r.save(ctx); err != nil {
		return err
	}
	l := Lease{IP: spec.IP.Addr(), Generation: gen, TTL: r.m.leaseTTL}
	g, lapse := r.m.grant(l)
	// Whatever the answer, a grant that reached the destination lapses by
	// this unless renewed.
	r.dstLapse = lapse
	if _, err := r.dst.ClaimAddress(ctx, spec.ID, spec.IP, ClaimOptions{LastLook: look, Lease: g}); err != nil {
		return err
	}
	r.dstLease = &renewal{m: r.m, host: r.dst, id: spec.ID, lease: l, lapse: lapse, stop: make(chan struct{}), done: make(chan struct{})}
	go r.dstLease.run(context.WithoutCancel(ctx))
	return nil
}

// pinDest commits the migration: the destination's lease holds until
// revoked.
func (r *run) pinDest(ctx context.Context) error {
	r.rec.Committing = true
	// The pin takes a generation of its own: a renewal of the armed lease
	// sent before it may be applied after it (the agent serves requests
	// concurrently; one whose answer was lost lands late), and at the same
	// generation it would re-arm the pinned lease, which would then lapse
	// under the committed copy. At an older one it is refused.
	gen, err := r.nextGeneration(ctx)
	if err != nil {
		return err
	}
	if _, err := r.m.pin(ctx, r.dst, r.rec.Spec.ID, Lease{IP: r.rec.Spec.IP.Addr(), Generation: gen}); err != nil {
		return err
	}
	r.dstLease.halt()
	return nil
}

// announce sends gratuitous ARP from h for the container's address.
func (r *run) announce(ctx context.Context, h Host) error {
	_, err := h.Announce(ctx, r.rec.Spec.ID, r.rec.Spec.IP.Addr(), AnnounceOptions{Rounds: r.m.repeats, Interval: r.m.interval})
	return err
}
