package plane

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/escape-mtd/escape/sensor/events"
)

// The sensor feed: every host's agent streams its sensor's JSON events
// (the same schema a SIEM reads, sensor/events) over the plane's link to
// it (feed_agents.go); the plane turns each scored epoch into a Report.
// Events are queued and handled in order by one goroutine, so a rollback
// or a migration that takes seconds never holds a stream, and an event
// redelivered after a reconnection is recognised by its epoch and never
// runs an action twice.

// Bounds of the queue of events waiting to be handled: by count, and by
// bytes, since an anomaly's evidence makes events of varying size. A full
// queue refuses more: the agent keeps what the plane did not acknowledge
// and sends it again.
const (
	feedQueueEvents = 4096
	feedQueueBytes  = 16 << 20
)

// interventionsKept bounds the windows remembered per container.
const interventionsKept = 16

// ErrFeedFull means the plane is behind on sensor events.
var ErrFeedFull = errors.New("sensor feed queue full")

// sensorFeed is the plane's side of the sensor feed. Its zero value is
// ready to use.
type sensorFeed struct {
	q eventQueue

	mu sync.Mutex
	// interventions are the plane's own recent actions on each container
	// (checkpoint dumps, restores, migrations): CRIU's parasite and
	// restorer run system calls inside the container, so an epoch that
	// overlaps one of them shows bags the workload never makes.
	interventions map[string][]window
}

type window struct{ start, end time.Time }

// eventQueue is a FIFO of events bounded by count and bytes.
type eventQueue struct {
	mu    sync.Mutex
	items []queuedEvent
	bytes int
	wake  chan struct{}
}

type queuedEvent struct {
	ev   events.Event
	size int
}

func (q *eventQueue) push(ev events.Event, size int) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) >= feedQueueEvents || q.bytes+size > feedQueueBytes {
		return fmt.Errorf("%w (%d events, %d bytes)", ErrFeedFull, len(q.items), q.bytes)
	}
	q.items = append(q.items, queuedEvent{ev, size})
	q.bytes += size
	if q.wake != nil {
		close(q.wake)
		q.wake = nil
	}
	return nil
}

// pop returns the oldest event, or a channel closed when one arrives.
func (q *eventQueue) pop() (events.Event, bool, <-chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		if q.wake == nil {
			q.wake = make(chan struct{})
		}
		return events.Event{}, false, q.wake
	}
	it := q.items[0]
	q.items[0] = queuedEvent{}
	q.items = q.items[1:]
	q.bytes -= it.size
	return it.ev, true, nil
}

func (q *eventQueue) len() (int, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items), q.bytes
}

// note records that the plane acted on container id during [start, end].
func (f *sensorFeed) note(id string, start, end time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.interventions == nil {
		f.interventions = map[string][]window{}
	}
	ws := append(f.interventions[id], window{start, end})
	if len(ws) > interventionsKept {
		ws = ws[len(ws)-interventionsKept:]
	}
	f.interventions[id] = ws
}

// overlaps reports whether [start, end] meets one of id's interventions.
func (f *sensorFeed) overlaps(id string, start, end time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.interventions[id] {
		if !start.After(w.end) && !end.Before(w.start) {
			return true
		}
	}
	return false
}

// intervene runs fn, an action of the plane on container id, and remembers
// when it ran.
func (p *Plane) intervene(id string, fn func() error) error {
	start := p.now()
	err := fn()
	p.feed.note(id, start, p.now())
	return err
}

// ValidateSensorEvent rejects a malformed sensor event.
func ValidateSensorEvent(ev events.Event) error {
	var errs []error
	if ev.Schema != events.SchemaVersion {
		errs = append(errs, fmt.Errorf("schema: version %d, this plane reads %d", ev.Schema, events.SchemaVersion))
	}
	if ev.Type == "" {
		errs = append(errs, errors.New("type: missing"))
	}
	if ev.Time.IsZero() {
		errs = append(errs, errors.New("time: missing"))
	}
	if ev.Container == nil || (ev.Container.Identity == "" && ev.Container.ID == "") {
		errs = append(errs, errors.New("container: missing identity and id"))
	}
	if scored(ev) && ev.Epoch == nil {
		errs = append(errs, fmt.Errorf("epoch: a %s event needs its epoch", ev.Type))
	}
	if ev.Epoch != nil && len(ev.Epoch.Unseen) > maxEvidence {
		errs = append(errs, fmt.Errorf("epoch.unseen: %d calls, at most %d", len(ev.Epoch.Unseen), maxEvidence))
	}
	if ev.Epoch != nil {
		for i, u := range ev.Epoch.Unseen {
			if u.Name == "" || len(u.Name) > maxCallName {
				errs = append(errs, fmt.Errorf("epoch.unseen[%d]: name of %d bytes, want 1..%d", i, len(u.Name), maxCallName))
				break
			}
		}
	}
	if iv := ev.Intervention; iv != nil && (iv.Kind == "" || len(iv.Kind) > maxCallName || len(iv.By) > maxCallName) {
		errs = append(errs, fmt.Errorf("intervention: kind of %d bytes and by of %d, want 1..%d and at most %d",
			len(iv.Kind), len(iv.By), maxCallName, maxCallName))
	}
	return errors.Join(errs...)
}

// maxEvidence bounds an event's evidence list: the sensor sends 8 calls; a
// longer list is garbage, and would bloat the audit.
const maxEvidence = 64

// maxCallName bounds a system call's name in the evidence (the longest
// x86_64 name has 22 bytes); the names go into the audit's reasons.
const maxCallName = 64

// scored reports whether ev carries an epoch verdict.
func scored(ev events.Event) bool {
	switch ev.Type {
	case events.TypeEpoch, events.TypeAnomaly, events.TypeDrops:
		return true
	}
	return false
}

// EnqueueSensorEvent queues a validated sensor event of size bytes (its
// JSON) for handling.
func (p *Plane) EnqueueSensorEvent(ev events.Event, size int) error {
	if err := ValidateSensorEvent(ev); err != nil {
		return fmt.Errorf("sensor event: %w", err)
	}
	if !scored(ev) {
		return nil // watched, unwatched, error: nothing to decide
	}
	return p.feed.q.push(ev, size)
}

// runFeed handles queued sensor events in order until ctx ends.
func (p *Plane) runFeed(ctx context.Context) {
	for {
		ev, ok, wake := p.feed.q.pop()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-wake:
			}
			continue
		}
		// Not cancelled by shutdown: the action it starts must finish.
		actx, cancel := p.actionContext(ctx)
		d, err := p.HandleSensorEvent(actx, ev, "sensor "+ev.Sensor)
		cancel()
		switch {
		case errors.Is(err, ErrNotLeader):
			// A follower reads the agents' streams too; the leader acts.
			p.log.Debug("sensor event left to the leader", zap.String("sensor", ev.Sensor), zap.Error(err))
		case errors.Is(err, ErrUnbound):
			p.log.Warn("sensor event for a container the plane did not place", zap.String("sensor", ev.Sensor),
				zap.String("type", ev.Type), zap.Error(err))
		case errors.Is(err, ErrNotFound):
			// A host's sensor watches every container of its namespace;
			// those the plane does not protect are none of its business.
			p.log.Debug("sensor event for a container the plane does not protect", zap.String("sensor", ev.Sensor), zap.Error(err))
		case err != nil:
			p.log.Warn("sensor event", zap.String("sensor", ev.Sensor), zap.String("type", ev.Type), zap.Error(err))
		case d.Action != "" && d.Action != "none":
			p.log.Info("decision", zap.String("container", d.Container), zap.String("action", d.Action),
				zap.String("outcome", d.Outcome), zap.Strings("reasons", d.Reasons))
		}
	}
}

// HandleSensorEvent turns one scored epoch of a sensor into a report and
// answers it. Events that cannot speak for the container's current copy are
// recorded and set aside, with the reason as the decision:
//   - a container the plane does not protect;
//   - a final (partial) epoch: the copy is going away;
//   - an event from a host the container no longer runs on (the source of a
//     migration), or emitted before its current copy started (a rollback);
//   - the first epoch of a copy the plane restored or restarted;
//   - an epoch the sensor marked as overlapping the agent's checkpoint,
//     restore or restart (ev.Intervention), or that overlaps, by the
//     plane's own record, its checkpoint, restore or migration of the
//     container;
//   - an anomaly of a copy the plane started less than RestoreSettle ago
//     whose evidence holds no novel call.
func (p *Plane) HandleSensorEvent(ctx context.Context, ev events.Event, actor string) (Decision, error) {
	if err := ValidateSensorEvent(ev); err != nil {
		return Decision{}, fmt.Errorf("sensor event: %w", err)
	}
	id, err := p.resolveIdentity(ev.Container)
	if err != nil {
		return Decision{}, err
	}
	p.pods.note(id, ev.Container.Pod)
	unlock, err := p.lock(ctx, id)
	if err != nil {
		return Decision{}, err
	}
	defer unlock()
	c, err := p.store.Container(id)
	if err != nil {
		return Decision{}, fmt.Errorf("sensor event: container %s: %w", id, err)
	}
	last, err := p.store.Epoch(id)
	if err != nil {
		return Decision{}, fmt.Errorf("sensor event: epoch of %s: %w", id, err)
	}
	ep := ev.Epoch
	start := ep.Start
	if start.IsZero() {
		start = ev.Time
	}
	var skip string
	switch {
	case ep.Final:
		skip = "final partial epoch of a copy that is going away"
	case ev.Container.Host != "" && ev.Container.Host != c.Host:
		skip = fmt.Sprintf("from host %s; the container now runs on %s", ev.Container.Host, c.Host)
	case ev.Time.Before(last.Since):
		skip = fmt.Sprintf("emitted %s, before the current copy started (%s)",
			ev.Time.Format(time.RFC3339Nano), last.Since.Format(time.RFC3339Nano))
	case ep.Seq == 0 && !last.Since.IsZero():
		// The kernel numbers a copy's epochs from 0. The first one of a
		// restored or restarted copy holds the end of the restore and the
		// process resuming (interrupted calls restarting), and the sensor
		// may begin watching the new cgroup only after the restore ended.
		skip = "first epoch of a copy the plane started: it holds the end of the restore"
	case ev.Intervention != nil:
		// The sensor knows, from the agent in its own process, that
		// this epoch overlaps the agent's step; the plane's own record
		// below is the fallback for sensors that do not mark.
		skip = fmt.Sprintf("marked by the sensor: overlaps the %s's %s of the container (CRIU runs code inside it)",
			ev.Intervention.By, ev.Intervention.Kind)
	case p.feed.overlaps(id, start, ev.Time):
		skip = "overlaps the plane's own checkpoint, restore or migration (CRIU runs code inside the container)"
	case ev.Type == events.TypeAnomaly && settling(c.Policy, last.Since, ev.Time) && knownCallsOnly(ep.Unseen):
		skip = fmt.Sprintf("%v after the plane started this copy (settling for %v) and every call of the unseen windows is one the workload makes (%s): a new copy settling (old connections reset, memory purged), not an attack's new calls",
			ev.Time.Sub(last.Since).Round(time.Millisecond), c.Policy.RestoreSettle, callNames(ep.Unseen))
	}
	if skip != "" {
		p.event(AuditEvent{Kind: "report", Container: id, Host: c.Host, Actor: actor, Outcome: "ignored", Reasons: []string{skip},
			Details: map[string]any{"type": ev.Type, "seq": ep.Seq, "mismatches": ep.Mismatches, "sensor": ev.Sensor}})
		return Decision{Container: id, Action: "none", Reasons: []string{"ignored: " + skip}, Outcome: "ok", Host: c.Host}, nil
	}
	r := Report{Container: id, Epoch: last.LastEpoch + 1, Anomalous: ev.Type == events.TypeAnomaly,
		Degraded: ep.Degraded, Learning: ep.Mode == "learning", Mismatches: int(min(ep.Mismatches, 1<<31-1)),
		Threshold: int(min(ep.Threshold, 1<<31-1)), Scorer: ep.Scorer, Score: finiteScore(ep.Value), Limit: finiteScore(ep.Limit),
		Time: ev.Time, Detail: fmt.Sprintf("sensor %s seq %d", ev.Sensor, ep.Seq)}
	return p.reportLocked(ctx, c, r, actor)
}

// finiteScore keeps a sensor's score in the range a Report accepts: a
// value that is not a finite non-negative number says nothing a reader
// could use, and must not make the report invalid.
func finiteScore(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0
	}
	return v
}

// ErrUnbound means a sensor event names a protected container's id but not
// the identity the plane bound it to: another container of that id, in
// another containerd namespace of the host.
var ErrUnbound = errors.New("not the container the plane placed")

// resolveIdentity maps a sensor's container to the protected container the
// plane placed: by its containerd id (the record's Spec.ID), which the
// plane chose and the agent ran. HandleSensorEvent then sets aside an event
// from any host but the record's (the feed has already checked that the
// event's host is the reporting agent's). The identity the sensor reports
// is its profile key, never an address: a label naming another container
// never redirects an event. Where the plane set the identity label (Deploy
// does), the sensor's identity must be that label: the sensor honours it
// only in its agent's own containerd namespace, so a container of the same
// id in another namespace of that host does not pass.
func (p *Plane) resolveIdentity(c *events.Container) (string, error) {
	if c.ID == "" {
		return "", fmt.Errorf("sensor event for identity %q without a containerd id: %w", c.Identity, ErrNotFound)
	}
	rec, err := p.store.Container(c.ID)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return "", fmt.Errorf("sensor event for %q (identity %q): %w", c.ID, c.Identity, ErrNotFound)
		}
		return "", err
	}
	if want := rec.Spec.Labels[events.IdentityLabel]; want != "" && c.Identity != want {
		return "", fmt.Errorf("sensor event for %s in namespace %q on %s: identity %q, where the plane bound %q: %w (%w)",
			c.ID, c.Namespace, c.Host, c.Identity, want, ErrUnbound, ErrNotFound)
	}
	if a := rec.Spec.Adopted; a != nil && c.Namespace != a.Namespace {
		// An adopted container is bound to the namespace its agent found
		// it in: a container of the same id elsewhere is not it.
		return "", fmt.Errorf("sensor event for %s in namespace %q on %s: the plane adopted it in namespace %q: %w (%w)",
			c.ID, c.Namespace, c.Host, a.Namespace, ErrUnbound, ErrNotFound)
	}
	return rec.Spec.ID, nil
}

// settling reports whether a copy the plane started at since (zero for the
// copy it deployed) is still within the policy's RestoreSettle at t.
func settling(pol Policy, since, t time.Time) bool {
	return !since.IsZero() && pol.RestoreSettle > 0 && t.Sub(since) < pol.RestoreSettle
}

// knownCallsOnly reports whether an anomaly's evidence is all calls the
// profile knows. No evidence (a sensor that sends none) is not known-only:
// the plane then acts as it always did.
func knownCallsOnly(unseen []events.Syscall) bool {
	for _, u := range unseen {
		if u.Novel {
			return false
		}
	}
	return len(unseen) > 0
}

func callNames(unseen []events.Syscall) string {
	names := make([]string, len(unseen))
	for i, u := range unseen {
		names[i] = u.Name
	}
	return strings.Join(names, ", ")
}
