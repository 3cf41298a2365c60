package migrate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// The end of a migration either way: finishing it, undoing it, and
// recovering one that a crashed plane left half-done, from its journal.

// finish removes the source's copy and the dumps of a committed
// migration. A source that cannot be reached keeps the journal entry
// (PhaseCleanupSource) for Recover: its copy is fenced (its address was
// released, or its lease lapsed before the destination took it).
func (r *run) finish(ctx context.Context) (Result, error) {
	m := r.m
	r.rec.Phase = PhaseCleanupSource
	if err := r.save(ctx); err != nil {
		m.log.Error("journal", zap.Error(err))
	}
	r.res.Outcome = Migrated
	err := r.do(ctx, StepRemoveSource, false, func(ctx context.Context) error {
		_, err := r.src.Remove(ctx, r.rec.Spec.ID)
		return err
	})
	if err != nil {
		r.rec.Error = err.Error()
		r.res.Pending = "source copy not removed yet (its address is gone): " + err.Error()
		_ = r.save(ctx)
		r.res.Record = r.rec
		return r.res, nil
	}
	r.rec.Done = StepRemoveSource
	r.res.Record = r.rec
	r.dropImages(ctx)
	if err := m.j.DeleteMigration(context.WithoutCancel(ctx), r.rec.Spec.ID); err != nil {
		return r.res, fmt.Errorf("migration %s done but journal not cleared: %w", r.rec.ID, err)
	}
	return r.res, nil
}

// dropImages removes the migration's dump from both hosts (one copy with
// shared storage, two without); a failure only leaves disk space used.
func (r *run) dropImages(ctx context.Context) {
	for _, h := range []Host{r.src, r.dst} {
		if _, err := h.DropImage(ctx, r.rec.Image); err != nil {
			r.m.log.Warn("drop migration image", zap.String("host", h.Name()), zap.String("image", string(r.rec.Image)), zap.Error(err))
		}
		if r.rec.Shared {
			return
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

// undo brings the container back to the source: the destination gives the
// address up (or, unreachable, its lease lapses first), its copy is
// removed, the address returns to the source under a new pinned lease,
// and the source is restored from the dump if it is not running. A
// destination that cannot be reached keeps its removal in the journal; a
// source that cannot be reached leaves the migration Stuck, its dump
// intact, for Recover to settle once it answers.
func (r *run) undo(ctx context.Context) (Result, error) {
	m := r.m
	ctx = context.WithoutCancel(ctx)
	r.rec.Phase = PhaseUndo
	if err := r.save(ctx); err != nil {
		m.log.Error("journal", zap.Error(err))
	}
	id := r.rec.Spec.ID
	var pending []error

	// Before each host is undone, what it was sent and did not answer has
	// landed or can no longer land (fence.go): a late request would
	// otherwise redo what the undo undoes (a late dump stops the source
	// the undo found running; a late release takes back the address the
	// undo gave back).
	if r.rec.DestClaimed {
		m.settle(ctx, r.dst)
		err := r.do(ctx, StepMoveAddress, true, func(ctx context.Context) error {
			_, err := r.dst.ReleaseAddress(ctx, id, r.rec.Spec.IP)
			return err
		})
		if err != nil {
			// A destination whose lease may be pinned never fences itself:
			// until it answers, the address cannot go back.
			if !errors.Is(err, ErrUnreachable) || r.rec.Committing {
				r.res.Outcome = Stuck
				r.rec.Error = err.Error()
				_ = r.save(ctx)
				r.res.Record = r.rec
				return r.res, fmt.Errorf("the destination keeps the address until it answers: %w", err)
			}
			r.m.waitLapse(ctx, r.rec.Dest, id, r.destLapse())
		}
		r.dstLease.halt()
	}
	if r.rec.Staged || r.rec.Done >= StepCheckpoint {
		m.settle(ctx, r.dst)
		if err := r.do(ctx, StepStage, true, func(ctx context.Context) error {
			_, err := r.dst.Remove(ctx, id)
			return err
		}); err != nil {
			pending = append(pending, err)
		}
	}
	m.settle(ctx, r.src)
	if err := r.do(ctx, StepCheckpoint, true, func(ctx context.Context) error { return r.restoreSource(ctx) }); err != nil {
		r.res.Outcome = Stuck
		r.rec.Error = err.Error()
		_ = r.save(ctx)
		r.res.Record = r.rec
		return r.res, err
	}
	r.srcLease.halt()
	if err := r.do(ctx, StepAnnounce, true, func(ctx context.Context) error { return r.announce(ctx, r.src) }); err != nil {
		m.log.Warn("announce after undo", zap.Error(err))
	}
	r.res.Outcome = Reverted
	if len(pending) > 0 {
		r.rec.Phase = PhaseCleanupDest
		r.res.Pending = "destination leftovers: " + errors.Join(pending...).Error()
		r.res.Record = r.rec
		return r.res, r.save(ctx)
	}
	r.dropImages(ctx)
	r.res.Record = r.rec
	return r.res, m.j.DeleteMigration(ctx, id)
}

// destLapse is by when a destination that stopped answering has fenced
// the address for sure.
func (r *run) destLapse() time.Time {
	if r.dstLease != nil {
		return r.dstLease.halt()
	}
	if !r.dstLapse.IsZero() {
		return r.dstLapse
	}
	// Recovering after a crash: the destination's last grant was sent
	// before this plane started, so it lapses within a TTL of now.
	return time.Now().Add(r.m.leaseTTL + r.m.skew + lapseMargin)
}

// restoreSource gives the address back to the source under a new pinned
// lease and, unless the dump failed and left it running, restores it
// from the dump.
func (r *run) restoreSource(ctx context.Context) error {
	spec := r.rec.Spec
	st, err := r.src.Status(ctx, spec.ID)
	if err != nil {
		return err
	}
	gen, err := r.nextGeneration(ctx)
	if err != nil {
		return err
	}
	back, _ := r.m.grant(Lease{IP: spec.IP.Addr(), Generation: gen})
	if _, err := r.src.ClaimAddress(ctx, spec.ID, spec.IP, ClaimOptions{LastLook: r.m.last, Lease: back}); err != nil {
		return fmt.Errorf("give the address back to the source: %w", err)
	}
	if st.Status == Running {
		return nil // the dump failed and left it running
	}
	if _, err := r.src.VerifyImage(ctx, r.rec.Image); err != nil {
		return fmt.Errorf("source stopped and no usable dump: %w", err)
	}
	_, err = r.src.Restore(ctx, spec, r.rec.Image, RestoreOptions{})
	return err
}

// Recover settles every journalled migration, as a restarted plane must,
// and as the plane retries for those a host's silence left unsettled: one
// committed (its destination's lease pinned) goes forward; one whose
// destination holds a whole, running copy is committed; any other is
// undone. Pending cleanups are retried.
func (m *Migrator) Recover(ctx context.Context) ([]Result, error) {
	recs, err := m.j.Migrations(ctx)
	if err != nil {
		return nil, fmt.Errorf("recover migrations: %w", err)
	}
	var out []Result
	var errs []error
	for _, rec := range recs {
		res, err := m.RecoverOne(ctx, rec)
		out = append(out, res)
		if err != nil {
			errs = append(errs, fmt.Errorf("recover migration %s of %s: %w", rec.ID, rec.Spec.ID, err))
		}
	}
	return out, errors.Join(errs...)
}

// RecoverOne settles one journalled migration (see Recover).
func (m *Migrator) RecoverOne(ctx context.Context, rec Record) (Result, error) {
	src, err := m.host(rec.Source)
	if err != nil {
		return Result{Record: rec, Outcome: Stuck}, err
	}
	dst, err := m.host(rec.Dest)
	if err != nil {
		return Result{Record: rec, Outcome: Stuck}, err
	}
	r := &run{m: m, rec: rec, res: Result{Record: rec}, src: src, dst: dst}
	id := rec.Spec.ID
	m.log.Info("recovering migration", zap.String("container", id), zap.String("migration", rec.ID),
		zap.String("phase", string(rec.Phase)), zap.Stringer("done", rec.Done))
	// The plane that wrote the record last (a dead one, or this one, whose
	// answers were lost) may have left requests in flight; each is bounded
	// by the record's last write plus the step timeout (run.do).
	m.waitQuiet(rec.Updated.Add(m.timeout+m.skew), zap.String("container", id), zap.String("migration", rec.ID),
		zap.String("why", "the last plane's requests may still land"))
	switch rec.Phase {
	case PhaseCleanupSource:
		return r.finish(ctx)
	case PhaseCleanupDest:
		if err := r.do(ctx, StepStage, true, func(ctx context.Context) error {
			_, err := dst.Remove(ctx, id)
			return err
		}); err != nil {
			r.res.Outcome = Reverted
			return r.res, err
		}
		r.dropImages(ctx)
		r.res.Outcome = Reverted
		return r.res, m.j.DeleteMigration(ctx, id)
	}
	if rec.Phase == PhaseForward && rec.Done >= StepCommit {
		return r.commit(ctx)
	}
	if rec.Phase == PhaseForward && rec.Done >= StepMoveAddress && r.destComplete(ctx) {
		if err := r.do(ctx, StepCommit, false, r.pinDest); err == nil {
			r.rec.Done = StepCommit
			if err := r.save(ctx); err != nil {
				return r.res, err
			}
			return r.commit(ctx)
		}
	}
	// Undo treats every step as possibly done: the crash may have come
	// between a step and its journal entry.
	if r.rec.Done < StepCheckpoint {
		r.rec.Done = StepCheckpoint
	}
	return r.undo(ctx)
}

// destComplete says the destination holds a copy that can be committed: it
// runs, carries the address, and, if lazily restored, has every page.
func (r *run) destComplete(ctx context.Context) bool {
	st, err := r.dst.Status(ctx, r.rec.Spec.ID)
	if err != nil || st.Status != Running || (r.rec.Lazy && !r.rec.LazyDone) {
		return false
	}
	for _, a := range st.Addresses {
		if a == r.rec.Spec.IP {
			return true
		}
	}
	return false
}
