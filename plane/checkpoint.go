package plane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap"

	"github.com/escape-mtd/escape/internal/atomicfile"
)

// ErrNotSafe means the container's recent epochs are not all clean, so a
// checkpoint now could capture a compromised state.
var ErrNotSafe = errors.New("recent epochs not clean")

// ErrNoCheckpoint means there is no verified checkpoint to roll back to.
var ErrNoCheckpoint = errors.New("no verified safe checkpoint")

const metaFile = "escape-checkpoint.json"

// Checkpoint takes a safe checkpoint of a container while it keeps
// running. Unless force, it refuses when the last policy.CleanEpochs epochs
// are not all clean. The dump is written to shared storage, verified, its
// metadata written atomically beside it, and only then are checkpoints
// beyond the retention pruned.
func (p *Plane) Checkpoint(ctx context.Context, id string, force bool, actor string) (CheckpointRecord, error) {
	unlock, err := p.lock(ctx, id)
	if err != nil {
		return CheckpointRecord{}, err
	}
	defer unlock()
	return p.checkpointLocked(ctx, id, force, actor)
}

func (p *Plane) checkpointLocked(ctx context.Context, id string, force bool, actor string) (CheckpointRecord, error) {
	c, err := p.store.Container(id)
	if err != nil {
		return CheckpointRecord{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	ep, err := p.store.Epoch(id)
	if err != nil {
		return CheckpointRecord{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	if !force && ep.CleanStreak < c.Policy.CleanEpochs {
		err := fmt.Errorf("checkpoint %s: %w: %d clean in a row, policy wants %d", id, ErrNotSafe, ep.CleanStreak, c.Policy.CleanEpochs)
		p.event(AuditEvent{Kind: "decision", Container: id, Host: c.Host, Action: "checkpoint", Decision: "skip", Actor: actor,
			Reasons: []string{err.Error()}, Outcome: "refused"})
		return CheckpointRecord{}, err
	}
	seq, err := p.store.NextCheckpointSeq(id)
	if err != nil {
		return CheckpointRecord{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	dir := filepath.Join(p.checkpointRoot(), id, fmt.Sprintf("%06d-e%d", seq, ep.LastEpoch))
	work := dir + ".work"
	start := time.Now()
	err = p.rt.Checkpoint(ctx, c.Host, id, dir, migrate.WithWorkDir(work))
	took := time.Since(start)
	p.feed.note(id, start, start.Add(took)) // CRIU's parasite ran inside the container
	var size int64
	if err == nil {
		size, err = migrate.VerifyImage(dir)
	}
	rec := CheckpointRecord{Container: id, Seq: seq, Dir: dir, Host: c.Host, SafeEpoch: ep.LastEpoch,
		Created: p.now(), Bytes: size, Took: Duration(took), Forced: force}
	if err == nil {
		var b []byte
		if b, err = json.MarshalIndent(rec, "", "  "); err == nil {
			err = atomicfile.WriteFile(filepath.Join(dir, metaFile), b, 0o600)
		}
	}
	if err == nil {
		err = p.store.AddCheckpoint(rec)
	}
	_ = os.RemoveAll(work)
	if err != nil {
		_ = os.RemoveAll(dir)
		p.event(AuditEvent{Kind: "action", Action: "checkpoint", Container: id, Host: c.Host, Actor: actor, Outcome: "failed",
			Error: err.Error(), Duration: ms(took)})
		return CheckpointRecord{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	p.event(AuditEvent{Kind: "action", Action: "checkpoint", Container: id, Host: c.Host, Actor: actor, Outcome: "ok",
		Duration: ms(took), Details: map[string]any{"seq": seq, "safe_epoch": ep.LastEpoch, "bytes": size, "forced": force}})
	p.prune(id, c.Policy.Retain)
	return rec, nil
}

// prune deletes checkpoints beyond the newest `keep` ones. It runs only
// after a newer checkpoint was verified and recorded.
func (p *Plane) prune(id string, keep int) {
	cks, err := p.store.Checkpoints(id)
	if err != nil {
		p.log.Error("prune", zap.String("container", id), zap.Error(err))
		return
	}
	for len(cks) > keep {
		old := cks[0]
		cks = cks[1:]
		if err := p.store.DeleteCheckpoint(id, old.Seq); err != nil {
			p.log.Error("prune", zap.Error(err))
			return
		}
		if err := os.RemoveAll(old.Dir); err != nil {
			p.log.Warn("prune dir", zap.String("dir", old.Dir), zap.Error(err))
		}
		p.event(AuditEvent{Kind: "action", Action: "prune-checkpoint", Container: id, Outcome: "ok",
			Details: map[string]any{"seq": old.Seq, "safe_epoch": old.SafeEpoch}})
	}
}

// sweepCheckpoints removes checkpoint directories no record points at:
// dumps interrupted by a crash before they were verified and recorded.
func (p *Plane) sweepCheckpoints() {
	cs, err := p.store.Containers()
	if err != nil {
		return
	}
	for _, c := range cs {
		cks, err := p.store.Checkpoints(c.Spec.ID)
		if err != nil {
			continue
		}
		known := map[string]bool{}
		for _, ck := range cks {
			known[ck.Dir] = true
		}
		dir := filepath.Join(p.checkpointRoot(), c.Spec.ID)
		es, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range es {
			path := filepath.Join(dir, e.Name())
			if known[path] || strings.HasPrefix(e.Name(), "migration-") {
				continue
			}
			p.log.Info("sweeping unrecorded checkpoint directory", zap.String("dir", path))
			_ = os.RemoveAll(path)
		}
	}
}

// safeCheckpoints returns the checkpoints whose images still verify,
// newest first.
func (p *Plane) safeCheckpoints(id string) ([]CheckpointRecord, error) {
	cks, err := p.store.Checkpoints(id)
	if err != nil {
		return nil, err
	}
	var out []CheckpointRecord
	for i := len(cks) - 1; i >= 0; i-- {
		if _, err := migrate.VerifyImage(cks[i].Dir); err == nil {
			out = append(out, cks[i])
		} else {
			p.log.Warn("checkpoint no longer verifies", zap.String("dir", cks[i].Dir), zap.Error(err))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", id, ErrNoCheckpoint)
	}
	return out, nil
}

// RollbackResult reports a rollback.
type RollbackResult struct {
	Container  string           `json:"container"`
	Host       string           `json:"host"`
	Checkpoint CheckpointRecord `json:"checkpoint"`
	// Downtime is from killing the running copy to the restored task's
	// start.
	Downtime Duration `json:"downtime"`
	Kill     Duration `json:"kill"`
	Restore  Duration `json:"restore"`
	// InWindow counts rollbacks within the policy window, this one included.
	InWindow int `json:"in_window"`
	// Lazy is set when the memory came in lazily (Config.LazyRestoreFrom);
	// Downtime then runs to the last page, when the copy takes traffic.
	Lazy bool `json:"lazy,omitempty"`
}

// Rollback restores a container on its host from its last safe checkpoint.
func (p *Plane) Rollback(ctx context.Context, id string, reasons []string, actor string) (RollbackResult, error) {
	unlock, err := p.lock(ctx, id)
	if err != nil {
		return RollbackResult{}, err
	}
	defer unlock()
	return p.rollbackLocked(ctx, id, reasons, actor)
}

func (p *Plane) rollbackLocked(ctx context.Context, id string, reasons []string, actor string) (RollbackResult, error) {
	c, err := p.store.Container(id)
	if err != nil {
		return RollbackResult{}, fmt.Errorf("rollback %s: %w", id, err)
	}
	cks, err := p.safeCheckpoints(id)
	if err != nil {
		p.event(AuditEvent{Kind: "action", Action: "rollback", Container: id, Host: c.Host, Actor: actor, Reasons: reasons,
			Outcome: "failed", Error: err.Error()})
		return RollbackResult{}, fmt.Errorf("rollback: %w", err)
	}
	ck := cks[0]
	res := RollbackResult{Container: id, Host: c.Host, Checkpoint: ck}
	// Journalled before anything is killed; cleared at the end, whatever
	// the outcome: a failed rollback is reported, a crashed one redone.
	c.Rollback = &PendingRollback{Checkpoint: ck.Seq, Started: p.now()}
	if err := p.store.PutContainer(c); err != nil {
		return res, fmt.Errorf("rollback %s: journal: %w", id, err)
	}
	defer func() {
		c.Rollback = nil
		if err := p.store.PutContainer(c); err != nil {
			p.log.Error("clear the rollback journal", zap.String("container", id), zap.Error(err))
		}
	}()
	// The checkpoint's TCP connections are stale (their peers moved on) and
	// their 4-tuples may still linger in TIME_WAIT after the kill: restore
	// them closed. The file is put back before anything else can dump.
	if c.Spec.CRIUConfig != "" {
		if err := p.writeCRIUConfig(c.Spec.CRIUConfig, true); err != nil {
			return RollbackResult{}, fmt.Errorf("rollback %s: %w", id, err)
		}
		defer func() {
			if err := p.writeCRIUConfig(c.Spec.CRIUConfig, false); err != nil {
				p.log.Error("restore criu config", zap.String("container", id), zap.Error(err))
			}
		}()
	}
	t0 := time.Now()
	err = p.rt.Kill(ctx, c.Host, id)
	t1 := time.Now()
	if err == nil {
		// The running copy is gone: a checkpoint that fails to restore
		// must not leave the container without one, so the older safe
		// checkpoints are tried in turn. A failed attempt may leave CRIU's
		// network lock behind (migrate.ClearNetworkLocks); the copy's
		// connections are restored closed, so none is live to protect.
		var errs []error
		for i, cand := range cks {
			opts := []migrate.RestoreOption{migrate.RestoreWorkDir(cand.Dir + ".restore"), migrate.ClearNetworkLocks()}
			if i == 0 && p.lazyRollback(c, cand) {
				// A lazy restore that fails leaves no copy: the same
				// checkpoint is then restored in full.
				lctx, cancel := lazyAttemptContext(ctx)
				err = p.rt.Restore(lctx, c.Host, c.Spec, cand.Dir, append(opts, migrate.RestoreLazily())...)
				cancel()
				if err == nil {
					_ = os.RemoveAll(cand.Dir + ".restore")
					ck, res.Checkpoint, res.Lazy = cand, cand, true
					break
				}
				p.log.Error("restore checkpoint lazily", zap.String("container", id), zap.Uint64("seq", cand.Seq), zap.Error(err))
				reasons = append(slices.Clip(reasons), fmt.Sprintf("lazy restore of checkpoint %d failed, restored in full: %v", cand.Seq, err))
			}
			err = p.rt.Restore(ctx, c.Host, c.Spec, cand.Dir, opts...)
			if err == nil {
				_ = os.RemoveAll(cand.Dir + ".restore")
				ck, res.Checkpoint = cand, cand
				break
			}
			p.log.Error("restore checkpoint", zap.String("container", id), zap.Uint64("seq", cand.Seq), zap.Error(err))
			errs = append(errs, fmt.Errorf("checkpoint %d: %w", cand.Seq, err))
		}
		if err != nil {
			err = errors.Join(errs...)
		} else if len(errs) > 0 {
			reasons = append(slices.Clip(reasons), fmt.Sprintf("restored an older checkpoint (%d): %v", ck.Seq, errors.Join(errs...)))
		}
	}
	t2 := time.Now()
	p.feed.note(id, t0, t2) // the restorer ran inside the new copy
	res.Kill, res.Restore, res.Downtime = Duration(t1.Sub(t0)), Duration(t2.Sub(t1)), Duration(t2.Sub(t0))
	if err != nil {
		p.event(AuditEvent{Kind: "action", Action: "rollback", Container: id, Host: c.Host, Actor: actor, Reasons: reasons,
			Outcome: "failed", Error: err.Error(), Duration: ms(t2.Sub(t0))})
		return res, fmt.Errorf("rollback %s: %w", id, err)
	}
	n, err := p.store.AddRollback(id, p.now(), c.Policy.RollbackWindow)
	if err != nil {
		p.log.Error("record rollback", zap.Error(err))
	}
	res.InWindow = n
	// A new copy, whose state is as of the checkpoint's epoch: new clean
	// epochs must accumulate before the next checkpoint counts as safe, and
	// the old copy's events no longer count.
	p.newCopy(id, t1)
	p.event(AuditEvent{Kind: "action", Action: "rollback", Container: id, Host: c.Host, Actor: actor, Reasons: reasons,
		Outcome: "ok", Duration: ms(t2.Sub(t0)),
		Details: map[string]any{"checkpoint_seq": ck.Seq, "safe_epoch": ck.SafeEpoch, "kill_ms": ms(t1.Sub(t0)),
			"restore_ms": ms(t2.Sub(t1)), "rollbacks_in_window": n, "lazy": res.Lazy}})
	return res, nil
}

// lazyRollback reports whether a rollback of c restores ck lazily: the
// checkpoint is at least Config.LazyRestoreFrom and the host can
// (migrate.Runtime.CanRestoreLazily).
func (p *Plane) lazyRollback(c ContainerRecord, ck CheckpointRecord) bool {
	from, on, err := p.cfg.lazyRestoreFrom()
	return err == nil && on && ck.Bytes >= 0 && uint64(ck.Bytes) >= from && p.rt.CanRestoreLazily(c.Host, c.Spec)
}

// lazyRestoreBudget bounds the lazy attempt of a rollback, so that the
// full restore after a failed one has time of its own. A lazy restore takes
// well under a second (docs/plane.md); the budget is what a stalled
// lazy-pages daemon costs the rollback's downtime (TestPlaneLazyRollback/
// daemon_stalls: 8.2 s of downtime with 10 s, 17.7 s with 20 s, the full
// restore included).
// In CI (session 11) a daemon that died as CRIU finished left runc
// waiting until the attempt's context ended, which was the rollback's
// whole context then; migrate now stops such a restore at once.
const lazyRestoreBudget = 10 * time.Second

// lazyAttemptContext gives the lazy attempt lazyRestoreBudget, and never more
// than half of what ctx has left.
func lazyAttemptContext(ctx context.Context) (context.Context, context.CancelFunc) {
	budget := lazyRestoreBudget
	if dl, ok := ctx.Deadline(); ok {
		budget = min(budget, time.Until(dl)/2)
	}
	return context.WithTimeout(ctx, budget)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// recoverRollbacks settles what a plane that died mid-rollback left. Every
// container's CRIU configuration is written afresh, since a rollback sets it
// to restore connections closed and only its own end puts it back. A
// container whose record still holds a pending rollback is rolled back
// again: its copy may have been killed and never restored, and a copy that
// is running may be the compromised one the rollback was meant to replace.
// Redoing it from the last safe checkpoint is right in every case.
func (p *Plane) recoverRollbacks(ctx context.Context) error {
	cs, err := p.store.Containers()
	if err != nil {
		return fmt.Errorf("recover rollbacks: %w", err)
	}
	var errs []error
	for _, c := range cs {
		if c.Spec.CRIUConfig != "" {
			if err := p.writeCRIUConfig(c.Spec.CRIUConfig, false); err != nil {
				errs = append(errs, fmt.Errorf("recover %s: %w", c.Spec.ID, err))
			}
		}
		if c.Rollback == nil {
			continue
		}
		why := fmt.Sprintf("a rollback to checkpoint %d begun at %s did not finish (the plane stopped)",
			c.Rollback.Checkpoint, c.Rollback.Started.UTC().Format(time.RFC3339))
		p.event(AuditEvent{Kind: "decision", Container: c.Spec.ID, Host: c.Host, Decision: "rollback", Actor: "recovery",
			Reasons: []string{why}})
		if _, err := p.Rollback(ctx, c.Spec.ID, []string{why}, "recovery"); err != nil {
			errs = append(errs, fmt.Errorf("recover %s: %w", c.Spec.ID, err))
		}
	}
	return errors.Join(errs...)
}
