package migrate

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/escape-mtd/escape/arp"
	"go.uber.org/zap"
)

// Step is one step of a migration, in the order they run.
type Step int

const (
	StepNone         Step = iota
	StepCheckpoint        // 1: dump on the source, which stops it
	StepPrepare           // 2: namespace and interface (same MAC) on the destination
	StepMoveAddress       // 3: the address leaves the source, joins the destination
	StepRestore           // 4: restore on the destination from shared storage
	StepAnnounce          // 5: gratuitous ARP from the destination
	StepRemoveSource      // 6: delete the source copy
	// StepStage runs first, before anything is frozen: the destination's
	// namespace, interface, container object and (unstarted) restore task
	// are created while the source still serves. It is numbered last so
	// that journalled step numbers keep their meaning; it never becomes a
	// record's Done (Record.Staged says it ran).
	StepStage
)

var stepNames = [...]string{"none", "checkpoint", "prepare", "move-address", "restore", "announce", "remove-source", "stage"}

func (s Step) String() string {
	if s >= 0 && int(s) < len(stepNames) {
		return stepNames[s]
	}
	return "step(" + strconv.Itoa(int(s)) + ")"
}

// Phase says what a journalled migration was doing.
type Phase string

const (
	PhaseForward       Phase = "forward"        // running steps 1..6
	PhaseUndo          Phase = "undo"           // going back to the source
	PhaseCleanupSource Phase = "cleanup-source" // migrated; the source copy still to delete
	PhaseCleanupDest   Phase = "cleanup-dest"   // reverted; leftovers on the destination to delete
)

// Record is a migration's journal entry, written before and after every
// step so that a restarted plane can finish or undo it.
type Record struct {
	ID     string `json:"id"`
	Spec   Spec   `json:"spec"`
	Source string `json:"source"`
	Dest   string `json:"dest"`
	Image  string `json:"image"`
	Done   Step   `json:"done"`
	// Staged is set (and journalled) before the destination is staged, so
	// that an undo or a recovery clears it even if the dump never ran.
	Staged bool `json:"staged,omitempty"`
	// Lazy is set (and journalled) before the destination is staged when
	// its memory will be restored lazily; LazyDone once every page is in.
	// A lazy copy is never live without LazyDone: until then no packet
	// reaches it and Recover undoes rather than finishes.
	Lazy     bool      `json:"lazy,omitempty"`
	LazyDone bool      `json:"lazy_done,omitempty"`
	Phase    Phase     `json:"phase"`
	Started  time.Time `json:"started"`
	Updated  time.Time `json:"updated"`
	Error    string    `json:"error,omitempty"`
}

// Journal persists migration records, one per container.
type Journal interface {
	PutMigration(ctx context.Context, r Record) error
	Migrations(ctx context.Context) ([]Record, error)
	DeleteMigration(ctx context.Context, container string) error
}

// Event is passed to a Hook before each step and each undo action.
type Event struct {
	Step   Step
	Undo   bool
	Record Record
}

// Hook runs before every step (and undo of a step). An error it returns
// fails that step; tests use it to inject real faults at exact points.
type Hook func(ctx context.Context, ev Event) error

// Outcome is how a migration ended.
type Outcome string

const (
	Migrated Outcome = "migrated" // running on the destination
	Reverted Outcome = "reverted" // running on the source again
	Stuck    Outcome = "stuck"    // neither could be confirmed; journal kept
)

// Timing is how long one step (or its undo) took.
type Timing struct {
	Step     Step          `json:"step"`
	Undo     bool          `json:"undo,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	Err      string        `json:"error,omitempty"`
}

// Result reports a migration (or a recovery).
type Result struct {
	Record  Record   `json:"record"`
	Outcome Outcome  `json:"outcome"`
	Steps   []Timing `json:"steps"`
	// Frozen is the time from the start of the dump until the restored
	// copy can answer: its task started on the destination and, after a
	// lazy restore, all its memory in and its hold lifted.
	Frozen time.Duration `json:"frozen_ns"`
	// CRIU is CRIU's own account of the dump and the restore, when they ran.
	CRIU CRIUStats `json:"criu"`
	// Lazy is set when the destination's memory was restored lazily
	// (lazy.go).
	Lazy bool `json:"lazy,omitempty"`
	// Pending is set when the outcome is final but cleanup remains (kept
	// in the journal for Recover).
	Pending string `json:"pending,omitempty"`
}

// Migrator runs migrations between hosts of a Runtime.
type Migrator struct {
	rt        *Runtime
	j         Journal
	root      string
	log       *zap.Logger
	hook      Hook
	timeout   time.Duration
	probe     time.Duration
	last      time.Duration
	repeats   int
	interval  time.Duration
	preflight time.Duration
	stage     bool
	lazy      bool
	lazyFrom  uint64
	// afterLazyStart, when set (by tests), runs between a lazy copy's
	// start and its last page.
	afterLazyStart func()
	paused         bool
	now            func() time.Time
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
// owner of the address once the source is frozen (default 50 ms; 0
// disables the probe). A staged migration probes while the source is
// dumped, for the whole dump and at least d, and then takes a last look
// (WithLastLook) in step 3; otherwise step 3 probes for d.
func WithProbe(d time.Duration) Option { return func(m *Migrator) { m.probe = d } }

// WithLastLook sets how long step 3 of a staged migration listens for
// another owner of the address, after the source has released it and just
// before the destination takes it (default 10 ms: a station on the segment
// answers an ARP probe within a millisecond; 0 disables it). It catches a
// station that took the address silently after the probe during the dump.
func WithLastLook(d time.Duration) Option { return func(m *Migrator) { m.last = d } }

// WithPreflight sets how long the destination host listens for a stranger
// owning the address before the dump (default 200 ms; 0 disables).
func WithPreflight(d time.Duration) Option { return func(m *Migrator) { m.preflight = d } }

// WithAnnounce sets the gratuitous ARP rounds and their interval (default
// 3 rounds, 1.1 s apart).
func WithAnnounce(rounds int, interval time.Duration) Option {
	return func(m *Migrator) { m.repeats, m.interval = rounds, interval }
}

// WithStaging says whether the destination is staged before the source is
// frozen (default true): its namespace, interface, container object and a
// restore task that is created but not started, so that the frozen window
// holds only the dump, the address move and runc's restore. Off, steps 2
// and 4 create them after the dump (the original order), which costs
// about a containerd shim start and two metadata commits of frozen time.
func WithStaging(on bool) Option { return func(m *Migrator) { m.stage = on } }

// WithPausedDump makes step 1 go through containerd's client
// Task.Checkpoint, which pauses the task before runc and CRIU start
// (Runtime.CheckpointPaused), instead of the direct request (default
// false). For measurements.
func WithPausedDump(on bool) Option { return func(m *Migrator) { m.paused = on } }

// New returns a migrator that keeps dumps under root (on shared storage)
// and its journal in j.
func New(rt *Runtime, j Journal, root string, opts ...Option) (*Migrator, error) {
	if rt == nil || j == nil {
		return nil, errors.New("migrator: runtime and journal are required")
	}
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("migrator: checkpoint root %q must be absolute", root)
	}
	m := &Migrator{rt: rt, j: j, root: root, log: zap.NewNop(), timeout: 2 * time.Minute,
		probe: 50 * time.Millisecond, last: 10 * time.Millisecond, lazy: true, lazyFrom: DefaultLazyFrom, preflight: 200 * time.Millisecond, repeats: 3, interval: 1100 * time.Millisecond, stage: true, now: time.Now}
	for _, o := range opts {
		o(m)
	}
	return m, nil
}

// run is one migration in flight.
type run struct {
	m   *Migrator
	rec Record
	res Result
}

func (r *run) save(ctx context.Context) error {
	r.rec.Updated = r.m.now()
	if err := r.m.j.PutMigration(context.WithoutCancel(ctx), r.rec); err != nil {
		return fmt.Errorf("journal migration %s: %w", r.rec.ID, err)
	}
	return nil
}

func (r *run) do(ctx context.Context, step Step, undo bool, fn func(context.Context) error) error {
	sctx, cancel := context.WithTimeout(ctx, r.m.timeout)
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
		return fmt.Errorf("%s %s: %w", map[bool]string{false: "step", true: "undo"}[undo], step, err)
	}
	return nil
}

// Migrate moves the container described by spec from source to dest. On
// any failure before the destination copy is confirmed, every completed step
// is undone and the container runs on the source again (Outcome Reverted,
// with the error). The journal holds the migration until it is settled.
func (m *Migrator) Migrate(ctx context.Context, spec Spec, source, dest string) (Result, error) {
	if err := spec.Validate(); err != nil {
		return Result{}, err
	}
	if source == dest {
		return Result{}, fmt.Errorf("migrate %s: source and destination are both %s", spec.ID, source)
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
	if st, err := m.rt.State(ctx, source, spec.ID); err != nil {
		return Result{}, fmt.Errorf("migrate %s: %w", spec.ID, err)
	} else if st != Running {
		return Result{}, fmt.Errorf("migrate %s: not running on %s (%s)", spec.ID, source, st)
	}
	now := m.now()
	id := now.UTC().Format("20060102T150405.000000000")
	r := &run{m: m, rec: Record{ID: id, Spec: spec, Source: source, Dest: dest,
		Image: imageDir(m.root, spec.ID, id), Phase: PhaseForward, Started: now}}
	r.res.Record = r.rec
	if err := r.save(ctx); err != nil {
		return r.res, err
	}
	srcEP, dstEP := CtEndpoint(source, spec.ID), CtEndpoint(dest, spec.ID)
	mctx := ctx            // outlives each step's own deadline
	var checks *destChecks // staged: overlapped with the dump
	defer func() {
		if checks != nil {
			_ = checks.wait() // stops the sentry on every path; idempotent
		}
	}()
	restoreWork := RestoreWorkDir(r.rec.Image + ".restore-" + dest)
	guards := guardResets
	if m.stage && m.canLazy(ctx, source, dest, spec) {
		r.rec.Lazy = true
		guards |= guardHold
	}
	frozenStart := time.Now()
	type stepFn struct {
		step Step
		fn   func(context.Context) error
	}
	var steps []stepFn
	if m.stage {
		steps = append(steps, stepFn{StepStage, func(ctx context.Context) error {
			if err := m.clearDest(ctx, spec, dest); err != nil {
				return err
			}
			// Journalled before anything exists on the destination, so
			// that a crash from here on leads to its removal.
			r.rec.Staged = true
			if err := r.save(ctx); err != nil {
				return err
			}
			if err := m.rt.PrepareNetwork(dest, spec, false); err != nil {
				return err
			}
			if err := setGuards(ctx, dest, spec.ID, guards, true); err != nil {
				return err
			}
			return m.rt.Stage(ctx, dest, spec, r.rec.Image, restoreWork)
		}})
	}
	steps = append(steps,
		stepFn{StepCheckpoint, func(ctx context.Context) error {
			if err := m.rt.Ping(ctx, dest); err != nil {
				return fmt.Errorf("destination unreachable: %w", err)
			}
			// Before freezing anything: does a stranger already answer for
			// the address on the destination's segment? Probed from the
			// destination host's own interface, ignoring the container's MAC.
			if m.preflight > 0 {
				if err := m.preflightProbe(ctx, dest, spec); err != nil {
					return err
				}
			}
			frozenStart = time.Now()
			if m.stage {
				checks = m.startDestChecks(mctx, dest, spec)
			}
			dump := m.rt.Checkpoint
			if m.paused {
				dump = m.rt.CheckpointPaused
			}
			err := dump(ctx, source, spec.ID, r.rec.Image, Exit(), WithWorkDir(r.rec.Image+".work"))
			if err == nil {
				_, err = VerifyImage(r.rec.Image)
			}
			if err != nil && checks != nil {
				_ = checks.wait() // the dump's error is the one to report
			}
			return err
		}},
		stepFn{StepPrepare, func(ctx context.Context) error {
			if m.stage {
				// Staged before the dump, probed during it: a stranger on
				// the destination's segment, or a destination that died
				// since (a few ms to ask), fails here, before the address
				// moves.
				probed := checks.wait()
				st, err := m.rt.State(ctx, dest, spec.ID)
				if err == nil && st != Created {
					err = fmt.Errorf("staged copy on %s is %s, want created", dest, st)
				}
				return errors.Join(probed, err)
			}
			if err := m.clearDest(ctx, spec, dest); err != nil {
				return err
			}
			if err := m.rt.PrepareNetwork(dest, spec, false); err != nil {
				return err
			}
			return setGuards(ctx, dest, spec.ID, guards, true)
		}},
		stepFn{StepMoveAddress, func(ctx context.Context) error {
			var o []arp.Option
			switch {
			case m.stage && m.last > 0:
				o = append(o, arp.WithProbe(m.last))
			case !m.stage && m.probe > 0:
				o = append(o, arp.WithProbe(m.probe))
			}
			return arp.MoveAddress(ctx, spec.IP, srcEP, dstEP, o...)
		}},
		stepFn{StepRestore, func(ctx context.Context) error {
			var err error
			switch {
			case r.rec.Lazy:
				err = r.restoreLazy(ctx, restoreWork)
			case m.stage:
				err = m.rt.StartStaged(ctx, dest, spec.ID, restoreWork)
			default:
				err = m.rt.Restore(ctx, dest, spec, r.rec.Image, Fresh(), restoreWork)
			}
			if err != nil {
				return err
			}
			st, err := m.rt.State(ctx, dest, spec.ID)
			if err != nil {
				return err
			}
			if st != Running {
				return fmt.Errorf("restored copy on %s is %s", dest, st)
			}
			// The restored sockets may answer for themselves now.
			if err := setGuards(ctx, dest, spec.ID, guards, false); err != nil {
				if guards&guardHold != 0 {
					return err // the copy cannot answer: a failed restore
				}
				m.log.Warn("remove reset guard", zap.String("container", spec.ID), zap.Error(err))
			}
			r.res.Frozen = time.Since(frozenStart)
			// Read before finish drops the work directories.
			if r.res.CRIU, err = ReadCRIUStats(r.rec.Image+".work", r.rec.Image+".restore-"+dest); err != nil {
				m.log.Warn("criu stats", zap.String("container", spec.ID), zap.Error(err))
			}
			return nil
		}},
		stepFn{StepAnnounce, func(ctx context.Context) error { return m.announce(ctx, dstEP, spec) }},
	)
	for _, s := range steps {
		if err := r.do(ctx, s.step, false, s.fn); err != nil {
			r.rec.Error = err.Error()
			return r.revert(ctx, err)
		}
		if s.step != StepStage {
			r.rec.Done = s.step
		}
		if err := r.save(ctx); err != nil {
			// The journal is the only way to recover from a crash: without
			// it, do not go further.
			return r.revert(ctx, err)
		}
	}
	return r.finish(ctx)
}

// clearDest refuses a destination that already runs a copy and removes a
// dead leftover (a container object or stopped task) of an earlier attempt.
func (m *Migrator) clearDest(ctx context.Context, spec Spec, dest string) error {
	st, err := m.rt.State(ctx, dest, spec.ID)
	if err != nil {
		return err
	}
	switch st {
	case Absent:
		return nil
	case Running, Paused:
		return fmt.Errorf("a live copy of %s already runs on %s", spec.ID, dest)
	default:
		if err := m.rt.Remove(ctx, dest, spec.ID); err != nil {
			return fmt.Errorf("remove leftover on destination: %w", err)
		}
		return nil
	}
}

func (m *Migrator) announce(ctx context.Context, ep arp.Endpoint, spec Spec) error {
	// Later rounds outlive the step; they stop by themselves.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(m.repeats+1)*m.interval)
	a, err := arp.Announce(actx, ep, spec.IP.Addr(), arp.WithRepeats(m.repeats), arp.WithInterval(m.interval), arp.WithLogger(m.log))
	if err != nil {
		cancel()
		return err
	}
	go func() { _ = a.Wait(); cancel() }()
	return nil
}
