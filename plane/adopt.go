package plane

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap"
)

// Adoption: the containers people already run. Every adopt.interval the
// plane asks each host's agent which of its containers carry
// escape.mtd/protect=true (migrate/node/adopt.go) and
//   - takes each new one under protection: a record marked Adopted, whose
//     spec is the agent's whole report (namespace, OCI spec, movability and
//     its refusals), whose policy comes from its labels, audited "adopt";
//   - refuses, audited once with the reason, one that cannot be protected:
//     an id another adopted or deployed container has (on another host,
//     or in another namespace), or one neither movable nor checkpointable;
//   - releases one whose label was removed, or that was deleted: its record
//     and its checkpoints go, audited "release". The user's container is
//     never touched.
//
// A host that does not answer is skipped for the round: silence is not a
// removed label. A container whose migration is unsettled is left to the
// migration's settlement.

// adoptLister is a host's agent that lists the containers it adopts
// (agentapi.Client, migrate/node.Node).
type adoptLister interface {
	Adoptable(ctx context.Context) ([]migrate.Spec, error)
}

// AdoptReport is what one adoption round did.
type AdoptReport struct {
	Adopted  []string `json:"adopted,omitempty"`
	Released []string `json:"released,omitempty"`
	// Refused maps host/namespace/id to the reason.
	Refused map[string]string `json:"refused,omitempty"`
	// Unanswered are the hosts whose agents did not list their containers.
	Unanswered []string `json:"unanswered,omitempty"`
}

// adoptState is what the rounds remember between them: the refusals
// already audited (each is audited again only when its reason changes).
type adoptState struct {
	refused map[string]string
}

// runAdopt runs adoption rounds every adopt.interval until ctx ends.
func (p *Plane) runAdopt(ctx context.Context) {
	if p.cfg.Adopt.Off {
		return
	}
	t := time.NewTicker(time.Duration(p.cfg.Adopt.Interval))
	defer t.Stop()
	for {
		p.AdoptRound(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// adopted is one container an agent listed, with where.
type adoptedCandidate struct {
	host string
	spec migrate.Spec
}

func (c adoptedCandidate) key() string {
	return c.host + "/" + c.spec.Adopted.Namespace + "/" + c.spec.ID
}

// AdoptRound runs one adoption round (Run runs them on the interval).
func (p *Plane) AdoptRound(ctx context.Context) AdoptReport {
	var rep AdoptReport
	if p.mayAct() != nil {
		return rep // a follower adopts nothing: the leader does
	}
	listed := map[string][]migrate.Spec{}
	for _, hc := range p.hosts.configs() {
		h, ok := p.hosts.Host(hc.Name)
		lister, can := h.(adoptLister)
		if !ok || !can {
			rep.Unanswered = append(rep.Unanswered, hc.Name)
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		found, err := lister.Adoptable(lctx)
		cancel()
		if err != nil {
			p.log.Warn("adoption: host did not list its containers", zap.String("host", hc.Name), zap.Error(err))
			rep.Unanswered = append(rep.Unanswered, hc.Name)
			continue
		}
		listed[hc.Name] = found
	}
	var cands []adoptedCandidate
	for _, hc := range p.hosts.configs() {
		for _, s := range listed[hc.Name] {
			if s.Adopted != nil {
				cands = append(cands, adoptedCandidate{host: hc.Name, spec: s})
			}
		}
	}
	unsettled := p.unsettledMigrations(ctx)
	refused := map[string]string{}
	taken := map[string]string{} // id -> the candidate's key that has it this round
	for _, c := range cands {
		why, err := p.adoptOne(ctx, c, unsettled, taken)
		switch {
		case err != nil:
			p.log.Warn("adoption", zap.String("container", c.spec.ID), zap.String("host", c.host), zap.Error(err))
		case why == "adopted":
			rep.Adopted = append(rep.Adopted, c.spec.ID)
		case why != "":
			refused[c.key()] = why
		}
	}
	rep.Released = p.releaseGone(ctx, listed, unsettled)
	p.forgetReleases(listed)
	p.auditRefusals(refused)
	if len(refused) > 0 {
		rep.Refused = refused
	}
	return rep
}

// unsettledMigrations are the ids whose migration the journal holds.
func (p *Plane) unsettledMigrations(ctx context.Context) map[string]bool {
	out := map[string]bool{}
	recs, err := p.store.Migrations(ctx)
	if err != nil {
		p.log.Warn("adoption: migrations", zap.Error(err))
	}
	for _, r := range recs {
		out[r.Spec.ID] = true
	}
	return out
}

// adoptOne takes c under protection, keeps its record up to date, or
// says why it is refused ("" when there is nothing to do or say).
func (p *Plane) adoptOne(ctx context.Context, c adoptedCandidate, unsettled map[string]bool, taken map[string]string) (string, error) {
	s := c.spec
	if err := migrate.ValidID(s.ID); err != nil {
		return "cannot be adopted: " + err.Error(), nil
	}
	if unsettled[s.ID] {
		return "", nil // a migration's copy: its settlement places it
	}
	if other, ok := taken[s.ID]; ok {
		return fmt.Sprintf("id %s is adopted already as %s this round: two adopted containers cannot share an id", s.ID, other), nil
	}
	taken[s.ID] = c.key()
	rec, err := p.store.Container(s.ID)
	switch {
	case err == nil && !rec.Adopted:
		return fmt.Sprintf("id %s is a container ESCAPE deployed (on %s): refused", s.ID, rec.Host), nil
	case err == nil && (rec.Host != c.host || rec.Spec.Adopted == nil || rec.Spec.Adopted.Namespace != s.Adopted.Namespace):
		ns := ""
		if rec.Spec.Adopted != nil {
			ns = rec.Spec.Adopted.Namespace
		}
		return fmt.Sprintf("id %s is adopted already on %s in namespace %s: two adopted containers cannot share an id", s.ID, rec.Host, ns), nil
	case err == nil:
		return "", p.refreshAdopted(ctx, rec, s)
	case !errors.Is(err, ErrNotFound):
		return "", err
	}
	rels, err := p.store.Released()
	if err != nil {
		return "", err
	}
	for _, r := range rels {
		if r.ID == s.ID {
			return "", nil // released by an operator; adopted again once its label comes back
		}
	}
	if !s.Adopted.Movable && !s.Adopted.Rollback {
		return "cannot be protected, neither moved nor rolled back in place: " + strings.Join(s.Adopted.Refusals, "; "), nil
	}
	p.screenAdopted(&s)
	if err := s.Validate(); err != nil {
		return "cannot be adopted: " + err.Error(), nil
	}
	pol, err := adoptedPolicy(p.defaults, s.Labels)
	if err != nil {
		return "cannot be adopted: its policy labels: " + err.Error(), nil
	}
	unlock, err := p.lock(ctx, s.ID)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := p.store.Container(s.ID); err == nil {
		return "", nil // adopted (or deployed) meanwhile: the next round sees it
	}
	now := p.now()
	rec = ContainerRecord{Spec: s, Host: c.host, Policy: pol, Generation: p.firstGeneration(ctx, s.ID), Created: now, Updated: now, Adopted: true}
	if err := p.store.PutContainer(rec); err != nil {
		return "", err
	}
	p.newCopy(s.ID, now)
	ip := ""
	if s.IP.IsValid() {
		ip = s.IP.String()
	}
	p.event(AuditEvent{Kind: "action", Action: "adopt", Container: s.ID, Host: c.host, Actor: "plane", Outcome: "ok",
		Reasons: s.Adopted.Refusals,
		Details: map[string]any{"namespace": s.Adopted.Namespace, "image": s.Image, "ip": ip, "mac": s.MAC, "netns": s.Adopted.Netns,
			"movable": s.Adopted.Movable, "rollback": s.Adopted.Rollback, "class": pol.Class, "status": s.Adopted.Status}})
	return "adopted", nil
}

// adoptedPolicy is the policy an adopted container's labels give it: the
// adoption label itself is no policy key.
func adoptedPolicy(defaults Policy, labels map[string]string) (Policy, error) {
	rest := maps.Clone(labels)
	delete(rest, migrate.AdoptLabel)
	return ResolvePolicy(defaults, PolicyOverrides{}, rest)
}

// screenAdopted adds the plane's own refusals to an agent's: an address
// moves only within the service range, where the plane keeps addresses
// apart, and only if no other protected container has it.
func (p *Plane) screenAdopted(s *migrate.Spec) {
	a := s.Adopted
	if !s.IP.IsValid() {
		return
	}
	why := ""
	if !p.service.Contains(s.IP.Addr()) {
		why = fmt.Sprintf("address %v is outside the service range %v, where the plane keeps addresses apart: it is not moved", s.IP, p.service)
	} else if cs, err := p.store.Containers(); err == nil {
		for _, c := range cs {
			if c.Spec.IP.IsValid() && c.Spec.IP.Addr() == s.IP.Addr() && c.Spec.ID != s.ID {
				why = fmt.Sprintf("address %v is %s's too: it is not moved", s.IP.Addr(), c.Spec.ID)
			}
		}
	}
	if why != "" {
		a.Movable = false
		a.Refusals = append(slices.Clip(a.Refusals), why)
	}
}

// refreshAdopted keeps an adopted record's spec as its agent reports it
// (its OCI spec changes with a rollback's annotation and a migration's
// namespace; its labels may change the policy). A container busy with an
// action is left for the next round.
func (p *Plane) refreshAdopted(ctx context.Context, rec ContainerRecord, s migrate.Spec) error {
	p.screenAdopted(&s)
	if reflect.DeepEqual(rec.Spec.Adopted, s.Adopted) && maps.Equal(rec.Spec.Labels, s.Labels) && rec.Spec.Image == s.Image &&
		rec.Spec.IP == s.IP && rec.Spec.MAC == s.MAC {
		return nil
	}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("refresh %s: %w", s.ID, err)
	}
	lctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	unlock, err := p.lock(lctx, s.ID)
	cancel()
	if err != nil {
		return nil // busy: the next round
	}
	defer unlock()
	rec, err = p.store.Container(s.ID)
	if err != nil {
		return nil
	}
	if pol, err := adoptedPolicy(p.defaults, s.Labels); err == nil {
		rec.Policy = pol
	}
	rec.Spec, rec.Updated = s, p.now()
	return p.store.PutContainer(rec)
}

// auditRefusals audits each refusal once, and again when its reason
// changes; refusals no longer made are forgotten (the map stays as large
// as what the agents list).
func (p *Plane) auditRefusals(now map[string]string) {
	p.mu.Lock()
	before := p.adopt.refused
	p.adopt.refused = now
	p.mu.Unlock()
	for key, why := range now {
		if before[key] == why {
			continue
		}
		host, rest, _ := strings.Cut(key, "/")
		ns, id, _ := strings.Cut(rest, "/")
		p.event(AuditEvent{Kind: "decision", Action: "adopt", Decision: "refuse", Container: id, Host: host, Actor: "plane",
			Outcome: "refused", Reasons: []string{why}, Details: map[string]any{"namespace": ns}})
	}
}
