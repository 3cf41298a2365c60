package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/escape-mtd/escape/arp"
	"go.uber.org/zap"
)

// The end of a migration either way: finishing it (step 6), undoing it, and
// recovering one a crashed plane left half-done from its journal.

// finish runs step 6: the destination copy is live, so from here on the
// migration only goes forward.
func (r *run) finish(ctx context.Context) (Result, error) {
	m := r.m
	r.rec.Phase = PhaseCleanupSource
	if err := r.save(ctx); err != nil {
		m.log.Error("journal", zap.Error(err))
	}
	err := r.do(ctx, StepRemoveSource, false, func(ctx context.Context) error {
		return m.rt.Remove(ctx, r.rec.Source, r.rec.Spec.ID)
	})
	r.res.Outcome = Migrated
	if err != nil {
		r.rec.Error = err.Error()
		r.res.Pending = "source copy not removed yet (its address is gone): " + err.Error()
		_ = r.save(ctx)
		r.res.Record = r.rec
		return r.res, nil
	}
	r.rec.Done = StepRemoveSource
	r.res.Record = r.rec
	m.dropImage(r.rec)
	if err := m.j.DeleteMigration(context.WithoutCancel(ctx), r.rec.Spec.ID); err != nil {
		return r.res, fmt.Errorf("migration %s done but journal not cleared: %w", r.rec.ID, err)
	}
	return r.res, nil
}

func (m *Migrator) dropImage(rec Record) {
	for _, p := range []string{rec.Image, rec.Image + ".work", rec.Image + ".restore-" + rec.Dest, rec.Image + ".restore-" + rec.Source} {
		if err := os.RemoveAll(p); err != nil {
			m.log.Warn("remove migration image", zap.String("path", p), zap.Error(err))
		}
	}
}

// revert undoes a failed migration and reports the cause.
func (r *run) revert(ctx context.Context, cause error) (Result, error) {
	res, err := r.undo(ctx)
	if err != nil {
		return res, fmt.Errorf("migrate %s %s->%s: %w; undo failed: %v", r.rec.Spec.ID, r.rec.Source, r.rec.Dest, cause, err)
	}
	return res, fmt.Errorf("migrate %s %s->%s (reverted to %s): %w", r.rec.Spec.ID, r.rec.Source, r.rec.Dest, r.rec.Source, cause)
}

// undo brings the container back to the source: the destination copy is
// killed first, the address returns, and the source is restored from the
// dump if it is not running. Dead destinations cannot stop this: the
// address is local netlink state, so a destination copy that could not be
// killed is fenced off it, and its removal is left in the journal.
func (r *run) undo(ctx context.Context) (Result, error) {
	m := r.m
	ctx = context.WithoutCancel(ctx)
	r.rec.Phase = PhaseUndo
	if err := r.save(ctx); err != nil {
		m.log.Error("journal", zap.Error(err))
	}
	id, src, dst := r.rec.Spec.ID, r.rec.Source, r.rec.Dest
	srcEP, dstEP := CtEndpoint(src, id), CtEndpoint(dst, id)
	var pending []error

	destTouched := r.rec.Done >= StepCheckpoint || r.rec.Staged
	// The address goes back first: a destination copy without it cannot
	// answer, and the FIN/RST its killed sockets would send has no route.
	err := r.do(ctx, StepMoveAddress, true, func(ctx context.Context) error {
		if arp.NetnsExists(dstEP.Netns) {
			if has, err := arp.HasAddress(dstEP, r.rec.Spec.IP); err == nil && has {
				return arp.MoveAddress(ctx, r.rec.Spec.IP, dstEP, srcEP)
			}
		}
		return arp.AddAddress(srcEP, r.rec.Spec.IP)
	})
	if err != nil {
		r.res.Outcome = Stuck
		r.res.Record = r.rec
		return r.res, err
	}
	if destTouched {
		if err := r.do(ctx, StepRestore, true, func(ctx context.Context) error { return m.rt.Kill(ctx, dst, id) }); err != nil {
			pending = append(pending, err)
		}
	}
	if destTouched {
		if err := r.do(ctx, StepPrepare, true, func(ctx context.Context) error { return m.rt.Remove(ctx, dst, id) }); err != nil {
			pending = append(pending, err)
			// At least take the destination's interface off the segment.
			_ = m.rt.RemoveNetwork(dst, id)
		}
	}
	err = r.do(ctx, StepCheckpoint, true, func(ctx context.Context) error {
		st, err := m.rt.State(ctx, src, id)
		if err != nil {
			return err
		}
		if st == Running {
			return nil // the dump failed and left it running
		}
		if _, err := VerifyImage(r.rec.Image); err != nil {
			return fmt.Errorf("source stopped and no usable dump: %w", err)
		}
		return m.rt.Restore(ctx, src, r.rec.Spec, r.rec.Image, RestoreWorkDir(r.rec.Image+".restore-"+src))
	})
	if err != nil {
		r.res.Outcome = Stuck
		r.rec.Error = err.Error()
		_ = r.save(ctx)
		r.res.Record = r.rec
		return r.res, err
	}
	if err := r.do(ctx, StepAnnounce, true, func(ctx context.Context) error { return m.announce(ctx, srcEP, r.rec.Spec) }); err != nil {
		m.log.Warn("announce after undo", zap.Error(err))
	}
	r.res.Outcome = Reverted
	m.dropImage(r.rec)
	if len(pending) > 0 {
		r.rec.Phase = PhaseCleanupDest
		r.res.Pending = "destination leftovers: " + errors.Join(pending...).Error()
		r.res.Record = r.rec
		return r.res, r.save(ctx)
	}
	r.res.Record = r.rec
	return r.res, m.j.DeleteMigration(ctx, id)
}

// Recover settles every journalled migration, as a restarted plane must:
// one whose destination copy is live (restored and holding the address)
// is finished; any other is undone. Pending cleanups are retried.
func (m *Migrator) Recover(ctx context.Context) ([]Result, error) {
	recs, err := m.j.Migrations(ctx)
	if err != nil {
		return nil, fmt.Errorf("recover migrations: %w", err)
	}
	var out []Result
	var errs []error
	for _, rec := range recs {
		res, err := m.recoverOne(ctx, rec)
		out = append(out, res)
		if err != nil {
			errs = append(errs, fmt.Errorf("recover migration %s of %s: %w", rec.ID, rec.Spec.ID, err))
		}
	}
	return out, errors.Join(errs...)
}

func (m *Migrator) recoverOne(ctx context.Context, rec Record) (Result, error) {
	r := &run{m: m, rec: rec, res: Result{Record: rec}}
	id := rec.Spec.ID
	// A crash during a lazy restore leaves lazy-pages in the container's
	// CRIU configuration, where the next dump must not find it.
	if err := stripLazy(rec.Spec.CRIUConfig); err != nil {
		return r.res, err
	}
	m.log.Info("recovering migration", zap.String("container", id), zap.String("migration", rec.ID),
		zap.String("phase", string(rec.Phase)), zap.Stringer("done", rec.Done))
	switch rec.Phase {
	case PhaseCleanupSource:
		return r.finish(ctx)
	case PhaseCleanupDest:
		if err := m.rt.Remove(ctx, rec.Dest, id); err != nil {
			return r.res, err
		}
		r.res.Outcome = Reverted
		return r.res, m.j.DeleteMigration(ctx, id)
	}
	// A dump in progress pauses the task; let it settle.
	for i := 0; i < 50; i++ {
		st, err := m.rt.State(ctx, rec.Source, id)
		if err != nil || st != Paused {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if rec.Phase == PhaseForward && rec.Done >= StepMoveAddress {
		st, err := m.rt.State(ctx, rec.Dest, id)
		has, herr := arp.HasAddress(CtEndpoint(rec.Dest, id), rec.Spec.IP)
		// A lazy copy whose last page was not confirmed may miss memory;
		// no request has reached it: undo.
		complete := !rec.Lazy || rec.LazyDone
		if err == nil && herr == nil && st == Running && has && complete {
			// The crash may have come before the restore step removed them.
			if err := clearGuards(ctx, rec.Dest, id, guardResets|guardHold); err != nil {
				return r.res, err
			}
			if err := r.do(ctx, StepAnnounce, false, func(ctx context.Context) error {
				return m.announce(ctx, CtEndpoint(rec.Dest, id), rec.Spec)
			}); err != nil {
				m.log.Warn("announce during recovery", zap.Error(err))
			}
			r.rec.Done = StepAnnounce
			return r.finish(ctx)
		}
	}
	// Undo treats every step as possibly done: the crash may have come
	// between a step and its journal entry.
	if r.rec.Done < StepCheckpoint {
		r.rec.Done = StepCheckpoint
	}
	return r.undo(ctx)
}
