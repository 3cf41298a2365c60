package plane

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/model"
	"go.uber.org/zap"
)

// Report is what a sensor sends at the end of each epoch of a container.
type Report struct {
	Container string `json:"container"`
	Epoch     uint64 `json:"epoch"`
	Anomalous bool   `json:"anomalous"`
	// Degraded: the sensor lost data in this epoch (flooding is a known
	// way to hide an attack), so it is not clean either.
	Degraded bool `json:"degraded,omitempty"`
	// Learning: the sensor was still training the profile; the epoch is
	// unverified, so it does not count as clean.
	Learning   bool `json:"learning,omitempty"`
	Mismatches int  `json:"mismatches,omitempty"`
	Threshold  int  `json:"threshold,omitempty"`
	// Scorer is the sensor's rule for the epoch (bosc, lm); Score and
	// Limit are its value and threshold in that rule's unit. Mismatches
	// and Threshold are the papers' counts, kept for older reporters.
	Scorer string    `json:"scorer,omitempty"`
	Score  float64   `json:"score,omitempty"`
	Limit  float64   `json:"limit,omitempty"`
	Time   time.Time `json:"time,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// Validate rejects a malformed report.
func (r Report) Validate() error {
	var errs []error
	if err := migrate.ValidID(r.Container); err != nil {
		errs = append(errs, fmt.Errorf("container: %w", err))
	}
	if r.Epoch == 0 {
		errs = append(errs, errors.New("epoch: must be positive"))
	}
	if r.Mismatches < 0 || r.Threshold < 0 {
		errs = append(errs, errors.New("mismatches/threshold: must not be negative"))
	}
	if len(r.Scorer) > 16 {
		errs = append(errs, errors.New("scorer: longer than 16 bytes"))
	}
	for _, v := range []float64{r.Score, r.Limit} {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			errs = append(errs, fmt.Errorf("score/limit %v: must be finite and not negative", v))
			break
		}
	}
	if len(r.Detail) > 4096 {
		errs = append(errs, errors.New("detail: longer than 4096 bytes"))
	}
	return errors.Join(errs...)
}

// Decision is the plane's answer to a report.
type Decision struct {
	Container string   `json:"container"`
	Action    string   `json:"action"` // none, rollback, migrate, restart, replicate
	Reasons   []string `json:"reasons"`
	Outcome   string   `json:"outcome"` // ok, failed, reverted
	Host      string   `json:"host,omitempty"`
	Error     string   `json:"error,omitempty"`
	Duration  Duration `json:"duration"`
}

// ErrIneligible means a requested destination is the source, flagged
// compromised, or draining.
var ErrIneligible = errors.New("not an eligible destination")

// ErrStaleReport means a report's epoch is not newer than the last one.
var ErrStaleReport = errors.New("stale report")

// HandleReport records a sensor report and, on an anomaly, responds under
// the container's policy.
func (p *Plane) HandleReport(ctx context.Context, r Report, actor string) (Decision, error) {
	if err := r.Validate(); err != nil {
		return Decision{}, fmt.Errorf("report: %w", err)
	}
	unlock, err := p.lock(ctx, r.Container)
	if err != nil {
		return Decision{}, err
	}
	defer unlock()
	c, err := p.store.Container(r.Container)
	if err != nil {
		return Decision{}, fmt.Errorf("report: container %s: %w", r.Container, err)
	}
	return p.reportLocked(ctx, c, r, actor)
}

// reportLocked records r for c and responds to an anomaly. The caller holds
// c's lock.
func (p *Plane) reportLocked(ctx context.Context, c ContainerRecord, r Report, actor string) (Decision, error) {
	now := p.now()
	clean := !r.Anomalous && !r.Degraded && !r.Learning
	_, err := p.store.UpdateEpoch(r.Container, func(e *EpochRecord) error {
		if r.Epoch <= e.LastEpoch {
			return fmt.Errorf("%w: epoch %d, last was %d", ErrStaleReport, r.Epoch, e.LastEpoch)
		}
		e.LastEpoch, e.Updated = r.Epoch, now
		switch {
		case r.Anomalous:
			e.CleanStreak, e.LastAnomaly = 0, r.Epoch
		case clean:
			e.CleanStreak++
			e.LastClean = r.Epoch
		default:
			e.CleanStreak = 0
		}
		return nil
	})
	if err != nil {
		return Decision{}, fmt.Errorf("report for %s: %w", r.Container, err)
	}
	p.event(AuditEvent{Kind: "report", Container: r.Container, Host: c.Host, Actor: actor,
		Details: map[string]any{"epoch": r.Epoch, "anomalous": r.Anomalous, "degraded": r.Degraded, "learning": r.Learning,
			"mismatches": r.Mismatches, "threshold": r.Threshold, "scorer": r.Scorer, "score": r.Score, "limit": r.Limit, "detail": r.Detail}})
	if !r.Anomalous {
		reason := "clean epoch"
		switch {
		case r.Degraded:
			reason = "degraded epoch (the sensor lost data): not clean"
		case r.Learning:
			reason = "learning epoch: not yet verified"
		}
		return Decision{Container: r.Container, Action: "none", Reasons: []string{reason}, Outcome: "ok", Host: c.Host}, nil
	}
	if _, err := p.store.UpdateHost(c.Host, func(h *HostRecord) {
		h.Anomalies = append(pruneTimes(h.Anomalies, now.Add(-24*time.Hour)), now)
		if len(h.Anomalies) > 1000 {
			h.Anomalies = h.Anomalies[len(h.Anomalies)-1000:]
		}
	}); err != nil {
		p.log.Error("record host anomaly", zap.Error(err))
	}
	reason := fmt.Sprintf("anomalous epoch %d (%d mismatches, threshold %d)", r.Epoch, r.Mismatches, r.Threshold)
	if r.Scorer != "" {
		reason = fmt.Sprintf("anomalous epoch %d (%s score %.3g > threshold %.3g; %d mismatching windows)", r.Epoch, r.Scorer, r.Score, r.Limit, r.Mismatches)
	}
	return p.respond(ctx, c, reason, actor), nil
}

// respond applies the policy to an anomaly. The caller holds the lock.
// The decision is a named result so that the deferred audit records the
// decision actually returned (the rollback and migration paths return a
// new value).
func (p *Plane) respond(ctx context.Context, c ContainerRecord, reason, actor string) (d Decision) {
	id := c.Spec.ID
	d = Decision{Container: id, Reasons: []string{reason}, Host: c.Host}
	start := time.Now()
	defer func() {
		d.Duration = Duration(time.Since(start))
		p.event(AuditEvent{Kind: "decision", Container: id, Host: d.Host, Actor: actor, Decision: d.Action,
			Reasons: d.Reasons, Outcome: d.Outcome, Error: d.Error, Duration: ms(time.Duration(d.Duration))})
	}()
	if c.Policy.Class == Stateless {
		d.Reasons = append(d.Reasons, "stateless container: policy "+string(c.Policy.Stateless))
		if c.Policy.Stateless == Replicate {
			dest, reasons, err := p.chooseDest(c.Host)
			d.Reasons = append(d.Reasons, reasons...)
			if err == nil {
				d.Action = "replicate"
				if err = p.replicateLocked(ctx, c, dest); err == nil {
					d.Outcome, d.Host = "ok", dest
					return d
				}
				d.Reasons = append(d.Reasons, "replication failed: "+err.Error())
			}
			d.Reasons = append(d.Reasons, "falling back to restart in place")
		}
		d.Action = "restart"
		if err := p.restartLocked(ctx, c); err != nil {
			d.Outcome, d.Error = "failed", err.Error()
			return d
		}
		d.Outcome = "ok"
		return d
	}
	n, err := p.store.Rollbacks(id, p.now().Add(-c.Policy.RollbackWindow))
	if err != nil {
		d.Action, d.Outcome, d.Error = "none", "failed", err.Error()
		return d
	}
	if n < c.Policy.RollbackLimit {
		d.Action = "rollback"
		d.Reasons = append(d.Reasons, fmt.Sprintf("%d rollbacks in the last %v, limit %d", n, c.Policy.RollbackWindow, c.Policy.RollbackLimit))
		return p.rollbackDecision(ctx, id, d, actor)
	}
	d.Reasons = append(d.Reasons, fmt.Sprintf("attack persists: %d rollbacks in the last %v reached the limit %d; escalating to live migration",
		n, c.Policy.RollbackWindow, c.Policy.RollbackLimit))
	dest, reasons, err := p.chooseDest(c.Host)
	d.Reasons = append(d.Reasons, reasons...)
	if err != nil {
		d.Action = "rollback"
		d.Reasons = append(d.Reasons, "no eligible destination ("+err.Error()+"): falling back to rollback")
		return p.rollbackDecision(ctx, id, d, actor)
	}
	d.Action = "migrate"
	res, err := p.migrateLocked(ctx, c, dest, d.Reasons, actor)
	if err != nil {
		d.Reasons = append(d.Reasons, fmt.Sprintf("migration to %s failed (%s): falling back to rollback", dest, res.Outcome))
		d.Action = "rollback"
		return p.rollbackDecision(ctx, id, d, actor)
	}
	d.Outcome, d.Host = "ok", dest
	return d
}

func (p *Plane) rollbackDecision(ctx context.Context, id string, d Decision, actor string) Decision {
	res, err := p.rollbackLocked(ctx, id, d.Reasons, actor)
	if err != nil {
		d.Outcome, d.Error = "failed", err.Error()
		return d
	}
	d.Outcome = "ok"
	d.Reasons = append(d.Reasons, fmt.Sprintf("restored checkpoint %d (safe as of epoch %d); downtime %v",
		res.Checkpoint.Seq, res.Checkpoint.SafeEpoch, time.Duration(res.Downtime).Round(time.Millisecond)))
	return d
}

// chooseDest asks the model for the best destination away from source.
func (p *Plane) chooseDest(source string) (string, []string, error) {
	hosts := p.hosts.configs()
	infos := make([]model.HostInfo, 0, len(hosts))
	for _, h := range hosts {
		hr, err := p.store.Host(h.Name)
		if err != nil {
			return "", nil, err
		}
		infos = append(infos, model.HostInfo{Name: h.Name, Labels: h.Labels, Compromised: hr.Compromised || hr.Draining, Anomalies: hr.Anomalies})
	}
	ranks, err := model.RankDestinations(source, infos, p.now(), p.rank...)
	if err != nil {
		return "", nil, err
	}
	if len(ranks) == 0 {
		return "", nil, model.ErrNoEligibleHost
	}
	best := ranks[0]
	if best.Host == source {
		return "", nil, fmt.Errorf("model ranked the source %s first", source)
	}
	reasons := []string{fmt.Sprintf("destination %s (score %.3f): %v", best.Host, best.Score, best.Reasons)}
	return best.Host, reasons, nil
}

// Migrate live-migrates a container. An empty `to` lets the model choose.
func (p *Plane) Migrate(ctx context.Context, id, to string, reasons []string, actor string) (migrate.Result, error) {
	unlock, err := p.lock(ctx, id)
	if err != nil {
		return migrate.Result{}, err
	}
	defer unlock()
	c, err := p.store.Container(id)
	if err != nil {
		return migrate.Result{}, fmt.Errorf("migrate %s: %w", id, err)
	}
	if to == "" {
		dest, rs, err := p.chooseDest(c.Host)
		if err != nil {
			p.event(AuditEvent{Kind: "decision", Container: id, Host: c.Host, Actor: actor, Action: "migrate", Decision: "none",
				Reasons: append(reasons, err.Error()), Outcome: "refused"})
			return migrate.Result{}, fmt.Errorf("migrate %s: %w", id, err)
		}
		to, reasons = dest, append(reasons, rs...)
	}
	return p.migrateLocked(ctx, c, to, reasons, actor)
}

func (p *Plane) migrateLocked(ctx context.Context, c ContainerRecord, to string, reasons []string, actor string) (migrate.Result, error) {
	id := c.Spec.ID
	if _, ok := p.hostConfig(to); !ok {
		return migrate.Result{}, fmt.Errorf("migrate %s: unknown host %q", id, to)
	}
	hr, err := p.store.Host(to)
	if err != nil {
		return migrate.Result{}, err
	}
	if to == c.Host || hr.Compromised || hr.Draining {
		err := fmt.Errorf("migrate %s: %w: %s (source %v, compromised %v, draining %v)",
			id, ErrIneligible, to, to == c.Host, hr.Compromised, hr.Draining)
		p.event(AuditEvent{Kind: "decision", Container: id, Host: c.Host, Actor: actor, Action: "migrate", Decision: "none",
			Reasons: append(reasons, err.Error()), Outcome: "refused"})
		return migrate.Result{}, err
	}
	start := p.now()
	var res migrate.Result
	err = p.intervene(id, func() (err error) {
		res, err = p.mig.Migrate(ctx, c.Spec, c.Host, to, c.Generation)
		return err
	})
	if res.Record.Generation > c.Generation {
		c.Generation = res.Record.Generation
	}
	steps := map[string]float64{}
	for _, s := range res.Steps {
		k := s.Step.String()
		if s.Undo {
			k = "undo-" + k
		}
		steps[k] += ms(s.Duration)
	}
	ev := AuditEvent{Kind: "action", Action: "migrate", Container: id, Host: c.Host, Actor: actor, Reasons: reasons,
		Outcome: string(res.Outcome), Duration: ms(res.Frozen),
		Details: map[string]any{"from": c.Host, "to": to, "steps_ms": steps, "frozen_ms": ms(res.Frozen), "pending": res.Pending}}
	if err != nil {
		ev.Error = err.Error()
	}
	if res.Outcome == migrate.Migrated {
		c.Host = to
	}
	c.Updated = p.now()
	if perr := p.store.PutContainer(c); perr != nil {
		err = errors.Join(err, perr)
	}
	if res.Outcome == migrate.Migrated {
		if rerr := p.store.ResetRollbacks(id); rerr != nil {
			p.log.Error("reset rollbacks", zap.Error(rerr))
		}
		p.newCopy(id, start)
	}
	p.event(ev)
	return res, err
}

// restartLocked restarts a stateless container in place, from its image.
func (p *Plane) restartLocked(ctx context.Context, c ContainerRecord) error {
	h, err := p.Host(c.Host)
	if err != nil {
		return fmt.Errorf("restart %s: %w", c.Spec.ID, err)
	}
	start := p.now()
	if err := p.intervene(c.Spec.ID, func() error { _, err := h.Restart(ctx, c.Spec); return err }); err != nil {
		return fmt.Errorf("restart %s: %w", c.Spec.ID, err)
	}
	p.newCopy(c.Spec.ID, start)
	return nil
}

// newCopy records that container id's current copy started at t.
func (p *Plane) newCopy(id string, t time.Time) {
	if _, err := p.store.UpdateEpoch(id, func(e *EpochRecord) error {
		e.Since, e.CleanStreak = t, 0
		return nil
	}); err != nil {
		p.log.Error("record the new copy", zap.String("container", id), zap.Error(err))
	}
}

// replicateLocked starts a fresh copy of a stateless container on dest,
// hands the address over to it and removes the old copy.
func (p *Plane) replicateLocked(ctx context.Context, c ContainerRecord, dest string) error {
	id := c.Spec.ID
	dst, err := p.Host(dest)
	if err != nil {
		return fmt.Errorf("replicate %s: %w", id, err)
	}
	undo := func(cause error) error {
		_, _ = dst.Remove(context.WithoutCancel(ctx), id)
		return fmt.Errorf("replicate %s to %s: %w", id, dest, cause)
	}
	if _, err := dst.EnsureImage(ctx, c.Spec.Image, nil); err != nil {
		return undo(err)
	}
	if _, err := dst.Start(ctx, c.Spec, migrate.StartOptions{}); err != nil {
		return undo(err)
	}
	// Journalled before the handoff: it grants up to two generations.
	gen := c.Generation
	c.Generation += 2
	if err := p.store.PutContainer(c); err != nil {
		return undo(err)
	}
	old := c.Host
	at, gen, err := p.mig.Handoff(ctx, c.Spec, old, dest, gen)
	if at != dest {
		return undo(err)
	}
	c.Host, c.Generation, c.Updated = dest, max(c.Generation, gen), p.now()
	if err := p.store.PutContainer(c); err != nil {
		return err
	}
	p.newCopy(id, c.Updated)
	if src, err := p.Host(old); err == nil {
		if _, err := src.Remove(ctx, id); err != nil {
			p.log.Warn("remove old replica", zap.String("host", old), zap.Error(err))
		}
	}
	if err != nil {
		p.log.Warn("replicate", zap.String("container", id), zap.Error(err))
	}
	return nil
}

// Run follows every host's event stream, handles the sensor feed, takes
// safe checkpoints on each stateful container's interval, and retries the
// settlement of migrations a host's silence left unsettled, until ctx
// ends. When ctx ends, an action already under way (a rollback, a
// migration, a dump) runs to its end before Run returns: a SIGTERM never
// leaves a migration half done.
func (p *Plane) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	// Every host's stream, and those of hosts the inventory gains later;
	// a host that leaves it has its stream stopped.
	stopFollowing := p.hosts.follow(func(name string, h migrate.Host) context.CancelFunc {
		src, ok := h.(eventSource)
		if !ok {
			return func() {}
		}
		hctx, cancel := context.WithCancel(ctx)
		wg.Add(1)
		go func() { defer wg.Done(); p.subscribe(hctx, name, src) }()
		return cancel
	})
	defer stopFollowing()
	wg.Add(1)
	go func() { defer wg.Done(); p.runFeed(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); p.runAdopt(ctx) }()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		p.checkpointDue(ctx)
		if n%settleEvery == 0 {
			p.settleMigrations(ctx)
		}
	}
}

// settleEvery is how many seconds apart unsettled migrations are retried.
const settleEvery = 15

// settleMigrations retries the journal's unsettled migrations (a host
// that did not answer; a cleanup left pending).
func (p *Plane) settleMigrations(ctx context.Context) {
	recs, err := p.store.Migrations(ctx)
	if err != nil || len(recs) == 0 {
		return
	}
	for _, rec := range recs {
		lctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		unlock, err := p.lock(lctx, rec.Spec.ID)
		cancel()
		if err != nil {
			continue // busy: the next round
		}
		actx, cancel := p.actionContext(ctx)
		res, err := p.mig.RecoverOne(actx, rec)
		cancel()
		ev := AuditEvent{Kind: "action", Action: "settle-migration", Container: rec.Spec.ID, Outcome: string(res.Outcome),
			Details: map[string]any{"migration": rec.ID, "phase": rec.Phase, "done": rec.Done.String(), "pending": res.Pending}}
		if err != nil {
			ev.Error = err.Error()
		}
		p.event(ev)
		if res.Outcome == migrate.Migrated || res.Outcome == migrate.Reverted {
			if err := p.placed(rec.Spec.ID, res); err != nil {
				p.log.Error("settle migration", zap.String("container", rec.Spec.ID), zap.Error(err))
			}
		}
		unlock()
	}
}

func (p *Plane) checkpointDue(ctx context.Context) {
	cs, err := p.store.Containers()
	if err != nil {
		p.log.Error("periodic checkpoints", zap.Error(err))
		return
	}
	for _, c := range cs {
		if c.Policy.Class != Stateful {
			continue
		}
		cks, err := p.store.Checkpoints(c.Spec.ID)
		if err != nil {
			continue
		}
		ep, err := p.store.Epoch(c.Spec.ID)
		if err != nil || ep.CleanStreak < c.Policy.CleanEpochs {
			continue
		}
		if n := len(cks); n > 0 {
			last := cks[n-1]
			if p.now().Sub(last.Created) < c.Policy.CheckpointInterval || last.SafeEpoch >= ep.LastEpoch {
				continue
			}
		}
		lctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		unlock, err := p.lock(lctx, c.Spec.ID)
		cancel()
		if err != nil {
			continue // busy: try on the next tick
		}
		actx, cancel := p.actionContext(ctx)
		_, err = p.checkpointLocked(actx, c.Spec.ID, false, "plane")
		cancel()
		if err != nil {
			p.log.Warn("periodic checkpoint", zap.String("container", c.Spec.ID), zap.Error(err))
		}
		unlock()
	}
}
