package plane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap"
)

// ErrNotSafe means the container's recent epochs are not all clean, so a
// checkpoint now could capture a compromised state.
var ErrNotSafe = errors.New("recent epochs not clean")

// ErrNoCheckpoint means there is no verified checkpoint to roll back to.
var ErrNoCheckpoint = errors.New("no verified safe checkpoint")

// Checkpoint takes a safe checkpoint of a container while it keeps
// running. Unless force, it refuses when the last policy.CleanEpochs epochs
// are not all clean. The host's agent dumps and verifies it; only then is
// it recorded, and only then are checkpoints beyond the retention pruned.
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
	h, err := p.Host(c.Host)
	if err != nil {
		return CheckpointRecord{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	seq, err := p.store.NextCheckpointSeq(id)
	if err != nil {
		return CheckpointRecord{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	img := migrate.CheckpointImage(id, seq, ep.LastEpoch)
	// Journalled before the dump: a plane that dies mid-dump has the
	// partial image dropped when it starts again (dropCutDumps).
	c.Dumping = img
	if err := p.store.PutContainer(c); err != nil {
		return CheckpointRecord{}, fmt.Errorf("checkpoint %s: journal: %w", id, err)
	}
	start := time.Now()
	res, err := h.Checkpoint(ctx, id, img, migrate.CheckpointOptions{})
	took := time.Since(start)
	p.feed.note(id, start, start.Add(took)) // CRIU's parasite ran inside the container
	rec := CheckpointRecord{Container: id, Seq: seq, Image: img, Host: c.Host, SafeEpoch: ep.LastEpoch,
		Created: p.now(), Bytes: res.Bytes, Took: Duration(took), Forced: force}
	if err == nil {
		if info, ierr := p.hostInfo(ctx, c.Host); ierr == nil {
			rec.Storage = info.SharedStorage
		}
		err = p.store.AddCheckpoint(rec)
	}
	c.Dumping = ""
	if perr := p.store.PutContainer(c); perr != nil {
		p.log.Error("clear the dump journal", zap.String("container", id), zap.Error(perr))
	}
	if err != nil {
		if _, derr := h.DropImage(context.WithoutCancel(ctx), img); derr != nil {
			p.log.Warn("drop a failed checkpoint", zap.String("image", string(img)), zap.Error(derr))
		}
		p.event(AuditEvent{Kind: "action", Action: "checkpoint", Container: id, Host: c.Host, Actor: actor, Outcome: "failed",
			Error: err.Error(), Duration: ms(took)})
		return CheckpointRecord{}, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	p.event(AuditEvent{Kind: "action", Action: "checkpoint", Container: id, Host: c.Host, Actor: actor, Outcome: "ok",
		Duration: ms(took), Details: map[string]any{"seq": seq, "safe_epoch": ep.LastEpoch, "bytes": res.Bytes, "forced": force}})
	p.prune(ctx, c, c.Policy.Retain)
	return rec, nil
}

// prune deletes checkpoints beyond the newest `keep` ones. It runs only
// after a newer checkpoint was verified and recorded.
func (p *Plane) prune(ctx context.Context, c ContainerRecord, keep int) {
	id := c.Spec.ID
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
		p.dropCheckpoint(ctx, old, c.Host)
		p.event(AuditEvent{Kind: "action", Action: "prune-checkpoint", Container: id, Outcome: "ok",
			Details: map[string]any{"seq": old.Seq, "safe_epoch": old.SafeEpoch}})
	}
}

// dropCheckpoint deletes a checkpoint's image where it was taken and where
// it may have been copied to (the container's host, for a rollback).
func (p *Plane) dropCheckpoint(ctx context.Context, ck CheckpointRecord, current string) {
	for _, name := range []string{ck.Host, current} {
		h, err := p.Host(name)
		if err != nil {
			continue
		}
		if _, err := h.DropImage(ctx, ck.Image); err != nil {
			p.log.Warn("drop checkpoint image", zap.String("host", name), zap.String("image", string(ck.Image)), zap.Error(err))
		}
		if name == current {
			return
		}
	}
}

// dropCutDumps drops the images of safe checkpoints a previous run began
// and never recorded.
func (p *Plane) dropCutDumps(ctx context.Context) {
	cs, err := p.store.Containers()
	if err != nil {
		return
	}
	for _, c := range cs {
		if c.Dumping == "" {
			continue
		}
		if h, err := p.Host(c.Host); err == nil {
			if _, err := h.DropImage(ctx, c.Dumping); err != nil {
				p.log.Warn("drop a dump cut short", zap.String("image", string(c.Dumping)), zap.Error(err))
				continue
			}
		}
		p.log.Info("dropped a dump a previous run cut short", zap.String("image", string(c.Dumping)))
		c.Dumping = ""
		if err := p.store.PutContainer(c); err != nil {
			p.log.Error("clear the dump journal", zap.String("container", c.Spec.ID), zap.Error(err))
		}
	}
}
