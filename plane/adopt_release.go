package plane

import (
	"context"
	"fmt"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap"
)

// The end of an adopted container's protection: its label removed, the
// container deleted, or an operator's Remove. The container itself is
// never touched.

// releaseGone releases the adopted containers their hosts no longer list.
func (p *Plane) releaseGone(ctx context.Context, listed map[string][]migrate.Spec, unsettled map[string]bool) []string {
	cs, err := p.store.Containers()
	if err != nil {
		p.log.Warn("adoption: containers", zap.Error(err))
		return nil
	}
	var out []string
	for _, c := range cs {
		found, answered := listed[c.Host]
		if !c.Adopted || !answered || unsettled[c.Spec.ID] || listedIn(found, c) {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		unlock, err := p.lock(lctx, c.Spec.ID)
		cancel()
		if err != nil {
			continue // busy (a rollback, a migration): the next round
		}
		err = p.releaseLocked(ctx, c.Spec.ID, "plane",
			fmt.Sprintf("%s no longer lists it with %s=true in namespace %s: its label was removed, or it was deleted", c.Host, migrate.AdoptLabel, c.Spec.Adopted.Namespace))
		if err == nil {
			// A copy a migration brought here lives in a network namespace
			// its agent made: the agent removes it once no container of the
			// id is left in the namespaces it adopts from (never a user's).
			if h, herr := p.Host(c.Host); herr == nil {
				if _, nerr := h.RemoveNetwork(ctx, c.Spec.ID); nerr != nil {
					p.log.Warn("adoption: the released container's network", zap.String("container", c.Spec.ID), zap.Error(nerr))
				}
			}
		}
		unlock()
		if err != nil {
			p.log.Warn("adoption: release", zap.String("container", c.Spec.ID), zap.Error(err))
			continue
		}
		out = append(out, c.Spec.ID)
	}
	return out
}

func listedIn(found []migrate.Spec, c ContainerRecord) bool {
	for _, s := range found {
		if s.ID == c.Spec.ID && s.Adopted != nil && c.Spec.Adopted != nil && s.Adopted.Namespace == c.Spec.Adopted.Namespace {
			return true
		}
	}
	return false
}

// releaseLocked ends the protection of an adopted container: its
// checkpoints are dropped and its record deleted. The container itself is
// its user's and stays as it is. The caller holds its lock.
func (p *Plane) releaseLocked(ctx context.Context, id, actor, why string) error {
	c, err := p.store.Container(id)
	if err != nil {
		return err
	}
	if !c.Adopted {
		return fmt.Errorf("release %s: not an adopted container", id)
	}
	cks, err := p.store.Checkpoints(id)
	if err != nil {
		return err
	}
	for _, ck := range cks {
		p.dropCheckpoint(ctx, ck, c.Host)
	}
	if err := p.store.DeleteContainer(id); err != nil {
		return err
	}
	p.event(AuditEvent{Kind: "action", Action: "release", Container: id, Host: c.Host, Actor: actor, Outcome: "ok",
		Reasons: []string{why}, Details: map[string]any{"namespace": c.Spec.Adopted.Namespace, "checkpoints_dropped": len(cks)}})
	return nil
}

// releaseByOperator is Remove for an adopted container: protection ends
// and the container keeps running, its user's; it is not adopted again
// until its label goes and comes back.
func (p *Plane) releaseByOperator(ctx context.Context, c ContainerRecord, actor string) error {
	if err := p.store.PutReleased(ReleasedRecord{ID: c.Spec.ID, Host: c.Host, Namespace: c.Spec.Adopted.Namespace, At: p.now()}); err != nil {
		return err
	}
	return p.releaseLocked(ctx, c.Spec.ID, actor, "released by an operator: the container is its user's and keeps running; it is adopted again once its label is removed and set again")
}

// forgetReleases forgets an operator's release once the container's host
// lists it no more (its label went, or the container did).
func (p *Plane) forgetReleases(listed map[string][]migrate.Spec) {
	rels, err := p.store.Released()
	if err != nil {
		return
	}
	for _, r := range rels {
		found, answered := listed[r.Host]
		if !answered {
			continue
		}
		still := false
		for _, s := range found {
			still = still || (s.ID == r.ID && s.Adopted != nil && s.Adopted.Namespace == r.Namespace)
		}
		if !still {
			if err := p.store.DeleteReleased(r.ID); err != nil {
				p.log.Warn("adoption: forget a release", zap.String("container", r.ID), zap.Error(err))
			}
		}
	}
}
