package plane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap"
)

// safeCheckpoints returns the checkpoints of c whose images still verify
// on the host that holds them, newest first.
func (p *Plane) safeCheckpoints(ctx context.Context, c ContainerRecord) ([]CheckpointRecord, error) {
	id := c.Spec.ID
	cks, err := p.store.Checkpoints(id)
	if err != nil {
		return nil, err
	}
	var out []CheckpointRecord
	for i := len(cks) - 1; i >= 0; i-- {
		err := p.verifyCheckpoint(ctx, cks[i], c.Host)
		if err == nil {
			out = append(out, cks[i])
			continue
		}
		p.log.Warn("checkpoint no longer verifies", zap.String("image", string(cks[i].Image)), zap.String("host", cks[i].Host), zap.Error(err))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", id, ErrNoCheckpoint)
	}
	return out, nil
}

// verifyCheckpoint checks ck's image where it was taken, or, if that host
// does not answer, on current when they share storage.
func (p *Plane) verifyCheckpoint(ctx context.Context, ck CheckpointRecord, current string) error {
	hosts := []string{ck.Host}
	if current != ck.Host && p.sharesStorage(ctx, ck, current) {
		hosts = append(hosts, current)
	}
	var errs []error
	for _, name := range hosts {
		h, err := p.Host(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = h.VerifyImage(vctx, ck.Image)
		cancel()
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sharesStorage says host reads ck's image without a transfer.
func (p *Plane) sharesStorage(ctx context.Context, ck CheckpointRecord, host string) bool {
	if ck.Storage == "" {
		return false
	}
	info, err := p.hostInfo(ctx, host)
	return err == nil && info.SharedStorage == ck.Storage
}

// bringCheckpoint makes ck's image readable on host: it is there already
// (taken there, or on storage both share), or host's agent fetches it from
// the agent of the host that took it.
func (p *Plane) bringCheckpoint(ctx context.Context, ck CheckpointRecord, host string) error {
	if ck.Host == host || p.sharesStorage(ctx, ck, host) {
		return nil
	}
	dst, err := p.Host(host)
	if err != nil {
		return err
	}
	if _, err := dst.VerifyImage(ctx, ck.Image); err == nil {
		return nil // fetched for an earlier rollback
	}
	src, err := p.Host(ck.Host)
	if err != nil {
		return err
	}
	hc, _ := p.hostConfig(ck.Host)
	t, err := src.Offer(ctx, migrate.Offer{Kind: migrate.OfferCheckpoint, Name: string(ck.Image), To: host})
	if err != nil {
		return fmt.Errorf("bring checkpoint %d from %s: %w", ck.Seq, ck.Host, err)
	}
	res, err := dst.Fetch(ctx, ck.Image, migrate.Peer{Name: ck.Host, Address: hc.Agent, Ticket: t})
	if err != nil {
		return fmt.Errorf("bring checkpoint %d from %s: %w", ck.Seq, ck.Host, err)
	}
	p.log.Info("checkpoint fetched for a rollback", zap.String("image", string(ck.Image)), zap.String("from", ck.Host),
		zap.String("to", host), zap.Int64("bytes", res.Bytes), zap.Duration("took", res.Took))
	return nil
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
	failed := func(err error) (RollbackResult, error) {
		p.event(AuditEvent{Kind: "action", Action: "rollback", Container: id, Host: c.Host, Actor: actor, Reasons: reasons,
			Outcome: "failed", Error: err.Error()})
		return RollbackResult{}, fmt.Errorf("rollback %s: %w", id, err)
	}
	h, err := p.Host(c.Host)
	if err != nil {
		return failed(err)
	}
	cks, err := p.safeCheckpoints(ctx, c)
	if err != nil {
		return failed(err)
	}
	// Before anything is killed: the newest checkpoint readable on the
	// host (a transfer here costs no downtime).
	for len(cks) > 0 {
		if err = p.bringCheckpoint(ctx, cks[0], c.Host); err == nil {
			break
		}
		reasons = append(slices.Clip(reasons), fmt.Sprintf("checkpoint %d cannot reach %s: %v", cks[0].Seq, c.Host, err))
		cks = cks[1:]
	}
	if len(cks) == 0 {
		return failed(fmt.Errorf("%w readable on %s: %v", ErrNoCheckpoint, c.Host, err))
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
	t0 := time.Now()
	_, err = h.Kill(ctx, id)
	t1 := time.Now()
	if err == nil {
		ck, res.Lazy, reasons, err = p.restoreNewest(ctx, c, cks, reasons)
		res.Checkpoint = ck
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

// restoreNewest restores the newest of cks that restores, the running copy
// being gone: a checkpoint that fails to restore must not leave the
// container without one, so the older ones are tried in turn. The
// checkpoint's TCP connections are stale (their peers moved on) and their
// 4-tuples may linger in TIME_WAIT after the kill, so they come back
// closed; a failed attempt may leave CRIU's network lock behind, which the
// next removes (no connection is live to protect).
func (p *Plane) restoreNewest(ctx context.Context, c ContainerRecord, cks []CheckpointRecord, reasons []string) (CheckpointRecord, bool, []string, error) {
	h, err := p.Host(c.Host)
	if err != nil {
		return CheckpointRecord{}, false, reasons, err
	}
	opts := migrate.RestoreOptions{ClearLocks: true, TCPClose: true}
	var errs []error
	for i, cand := range cks {
		if i > 0 {
			if err := p.bringCheckpoint(ctx, cand, c.Host); err != nil {
				errs = append(errs, fmt.Errorf("checkpoint %d: %w", cand.Seq, err))
				continue
			}
		}
		if i == 0 && p.lazyRollback(ctx, c, cand) {
			// A lazy restore that fails leaves no copy: the same
			// checkpoint is then restored in full.
			lctx, cancel := lazyAttemptContext(ctx)
			lazy := opts
			lazy.Lazy = true
			_, err := h.Restore(lctx, c.Spec, cand.Image, lazy)
			cancel()
			if err == nil {
				return cand, true, reasons, nil
			}
			p.log.Error("restore checkpoint lazily", zap.String("container", c.Spec.ID), zap.Uint64("seq", cand.Seq), zap.Error(err))
			reasons = append(slices.Clip(reasons), fmt.Sprintf("lazy restore of checkpoint %d failed, restored in full: %v", cand.Seq, err))
		}
		_, err := h.Restore(ctx, c.Spec, cand.Image, opts)
		if err == nil {
			if len(errs) > 0 {
				reasons = append(slices.Clip(reasons), fmt.Sprintf("restored an older checkpoint (%d): %v", cand.Seq, errors.Join(errs...)))
			}
			return cand, false, reasons, nil
		}
		p.log.Error("restore checkpoint", zap.String("container", c.Spec.ID), zap.Uint64("seq", cand.Seq), zap.Error(err))
		errs = append(errs, fmt.Errorf("checkpoint %d: %w", cand.Seq, err))
	}
	return CheckpointRecord{}, false, reasons, errors.Join(errs...)
}

// lazyRollback reports whether a rollback of c restores ck lazily: the
// checkpoint is at least Config.LazyRestoreFrom and the host can.
func (p *Plane) lazyRollback(ctx context.Context, c ContainerRecord, ck CheckpointRecord) bool {
	from, on, err := p.cfg.lazyRestoreFrom()
	if err != nil || !on || ck.Bytes < 0 || uint64(ck.Bytes) < from {
		return false
	}
	info, err := p.hostInfo(ctx, c.Host)
	return err == nil && info.LazyRestore
}

// lazyRestoreBudget bounds the lazy attempt of a rollback, so that the
// full restore after a failed one has time of its own. A lazy restore takes
// well under a second (docs/plane.md); the budget is what a stalled
// lazy-pages daemon costs the rollback's downtime (TestPlaneLazyRollback/
// daemon_stalls: 8.2 s of downtime with 10 s, 17.7 s with 20 s, the full
// restore included).
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

// recoverRollbacks settles what a plane that died mid-rollback left: a
// container whose record still holds a pending rollback is rolled back
// again. Its copy may have been killed and never restored, and a copy that
// is running may be the compromised one the rollback was meant to replace:
// redoing it from the last safe checkpoint is right in every case. (The
// agent itself strips what a restore cut short left in the container's
// CRIU configuration when it starts.)
func (p *Plane) recoverRollbacks(ctx context.Context) error {
	cs, err := p.store.Containers()
	if err != nil {
		return fmt.Errorf("recover rollbacks: %w", err)
	}
	var errs []error
	for _, c := range cs {
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

// hostInfo is what a host's agent said of itself, asked at most every
// half minute.
func (p *Plane) hostInfo(ctx context.Context, name string) (migrate.HostInfo, error) {
	p.mu.Lock()
	if e, ok := p.infos[name]; ok && p.now().Sub(e.at) < 30*time.Second {
		p.mu.Unlock()
		return e.info, nil
	}
	p.mu.Unlock()
	h, err := p.Host(name)
	if err != nil {
		return migrate.HostInfo{}, err
	}
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := h.Hello(hctx)
	if err != nil {
		return migrate.HostInfo{}, err
	}
	if info.Name != name {
		return migrate.HostInfo{}, fmt.Errorf("host %s: its agent calls itself %q", name, info.Name)
	}
	p.mu.Lock()
	if p.infos == nil {
		p.infos = map[string]hostInfoEntry{}
	}
	p.infos[name] = hostInfoEntry{info: info, at: p.now()}
	p.mu.Unlock()
	return info, nil
}

type hostInfoEntry struct {
	info migrate.HostInfo
	at   time.Time
}
