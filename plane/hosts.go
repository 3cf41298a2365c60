package plane

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/escape-mtd/escape/migrate"
)

// Operator actions on hosts: flagging one compromised (or clean again), and
// draining one of its containers (and undoing the drain).

// Flag marks a host compromised (or clean again). A compromised host is
// never chosen as a destination.
func (p *Plane) Flag(host string, compromised bool, reason, actor string) (HostRecord, error) {
	if err := p.mayAct(); err != nil {
		return HostRecord{}, fmt.Errorf("flag: %w", err)
	}
	if _, ok := p.hostConfig(host); !ok {
		return HostRecord{}, fmt.Errorf("flag: unknown host %q", host)
	}
	hr, err := p.store.UpdateHost(host, func(h *HostRecord) {
		h.Compromised, h.Reason, h.Updated = compromised, reason, p.now()
		if !compromised {
			h.Anomalies = nil
		}
	})
	if err != nil {
		return HostRecord{}, err
	}
	p.event(AuditEvent{Kind: "action", Action: "flag", Host: host, Actor: actor, Outcome: "ok",
		Reasons: []string{reason}, Details: map[string]any{"compromised": compromised}})
	return hr, nil
}

// Drain marks a host draining (no new placements or migrations onto it)
// and migrates every container off it; stateless ones are replicated.
func (p *Plane) Drain(ctx context.Context, host, actor string) ([]Decision, error) {
	if err := p.mayAct(); err != nil {
		return nil, fmt.Errorf("drain: %w", err)
	}
	if _, ok := p.hostConfig(host); !ok {
		return nil, fmt.Errorf("drain: unknown host %q", host)
	}
	if _, err := p.store.UpdateHost(host, func(h *HostRecord) { h.Draining, h.Updated = true, p.now() }); err != nil {
		return nil, err
	}
	p.event(AuditEvent{Kind: "action", Action: "drain", Host: host, Actor: actor, Outcome: "ok"})
	cs, err := p.store.Containers()
	if err != nil {
		return nil, err
	}
	sort.Slice(cs, func(a, b int) bool { return cs[a].Spec.ID < cs[b].Spec.ID })
	var out []Decision
	var errs []error
	for _, c := range cs {
		if c.Host != host {
			continue
		}
		d := Decision{Container: c.Spec.ID, Reasons: []string{"host " + host + " is draining"}, Host: host}
		if c.Policy.Class == Stateless {
			d.Action = "replicate"
			err = p.withLock(ctx, c.Spec.ID, func(c ContainerRecord) error {
				dest, rs, err := p.chooseDest(c.Host)
				d.Reasons = append(d.Reasons, rs...)
				if err != nil {
					return err
				}
				d.Host = dest
				return p.replicateLocked(ctx, c, dest)
			})
		} else {
			d.Action = "migrate"
			var res migrate.Result
			res, err = p.Migrate(ctx, c.Spec.ID, "", d.Reasons, actor)
			if res.Outcome == migrate.Migrated {
				d.Host = res.Record.Dest
			}
		}
		d.Outcome = "ok"
		if err != nil {
			d.Outcome, d.Error = "failed", err.Error()
			errs = append(errs, err)
		}
		out = append(out, d)
	}
	return out, errors.Join(errs...)
}

func (p *Plane) withLock(ctx context.Context, id string, fn func(ContainerRecord) error) error {
	unlock, err := p.lock(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	c, err := p.store.Container(id)
	if err != nil {
		return err
	}
	return fn(c)
}

// Undrain lets a host receive containers again.
func (p *Plane) Undrain(host, actor string) error {
	if err := p.mayAct(); err != nil {
		return fmt.Errorf("undrain: %w", err)
	}
	if _, ok := p.hostConfig(host); !ok {
		return fmt.Errorf("undrain: unknown host %q", host)
	}
	_, err := p.store.UpdateHost(host, func(h *HostRecord) { h.Draining, h.Updated = false, p.now() })
	if err == nil {
		p.event(AuditEvent{Kind: "action", Action: "undrain", Host: host, Actor: actor, Outcome: "ok"})
	}
	return err
}

// actionTimeout bounds an action that shutdown waits for.
const actionTimeout = 10 * time.Minute
