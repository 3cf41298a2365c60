package plane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/escape-mtd/escape/plane/agentapi"
	"github.com/escape-mtd/escape/sensor/events"
	"go.uber.org/zap"
)

// eventSource is a host link that streams its sensor's events
// (agentapi.Client).
type eventSource interface {
	Events(ctx context.Context, cur *agentapi.Cursor, handle func(agentapi.Batch) error) error
}

// subscribe follows one host's event stream until ctx ends, reconnecting
// with back-off. Every event must name the host whose link carried it: the
// link's certificate names the host, so an event that claims another is
// refused and audited, never acted on.
func (p *Plane) subscribe(ctx context.Context, host string, src eventSource) {
	var cur agentapi.Cursor
	wait := 200 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := src.Events(ctx, &cur, func(b agentapi.Batch) error { return p.takeBatch(host, b) })
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 10*time.Second {
			wait = 200 * time.Millisecond // it worked for a while
		}
		p.log.Debug("event stream ended; subscribing again", zap.String("host", host), zap.Duration("in", wait), zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// takeBatch queues one batch of a host's events. A batch that does not
// fit in the queue is refused whole (ErrFeedFull): the agent sends it
// again.
func (p *Plane) takeBatch(host string, b agentapi.Batch) error {
	if b.Dropped > 0 {
		p.lostEvents(host, b.Dropped)
	}
	for _, e := range b.Events {
		var ev events.Event
		if err := json.Unmarshal(e.JSON, &ev); err != nil {
			p.refuseEvent(host, "garbage", fmt.Errorf("event %d: %w", e.Seq, err))
			continue
		}
		if ev.Container != nil {
			if ev.Container.Host == "" {
				ev.Container.Host = host
			}
			if ev.Container.Host != host {
				p.refuseEvent(host, "host-mismatch", fmt.Errorf("event %d names host %q but came over %s's link", e.Seq, ev.Container.Host, host))
				continue
			}
		}
		err := p.EnqueueSensorEvent(ev, len(e.JSON))
		switch {
		case errors.Is(err, ErrFeedFull):
			return err
		case err != nil:
			p.refuseEvent(host, "invalid", err)
		}
	}
	return nil
}

func (p *Plane) refuseEvent(host, reason string, err error) {
	NewMetrics(p).feedRefused.WithLabelValues(host, reason).Inc()
	p.event(AuditEvent{Kind: "auth", Host: host, Actor: "agent " + host, Action: "sensor event", Outcome: "refused",
		Reasons: []string{reason + ": " + err.Error()}})
}

// lostEvents records that a host's agent lost events before the plane had
// them: an epoch the plane never saw cannot count as clean, so every
// container on that host starts its clean streak again.
func (p *Plane) lostEvents(host string, n uint64) {
	NewMetrics(p).feedLost.WithLabelValues(host).Add(float64(n))
	cs, err := p.store.Containers()
	if err != nil {
		p.log.Error("lost events", zap.String("host", host), zap.Error(err))
		return
	}
	for _, c := range cs {
		if c.Host != host {
			continue
		}
		if _, err := p.store.UpdateEpoch(c.Spec.ID, func(e *EpochRecord) error { e.CleanStreak = 0; return nil }); err != nil {
			p.log.Error("lost events", zap.String("container", c.Spec.ID), zap.Error(err))
		}
	}
	p.event(AuditEvent{Kind: "report", Host: host, Outcome: "degraded",
		Reasons: []string{fmt.Sprintf("the agent lost %d sensor events before the plane had them: no epoch of its containers counts as clean until new ones arrive", n)}})
}
