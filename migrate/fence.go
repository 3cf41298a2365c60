package migrate

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Request fences: every request the plane sends a host carries the
// wall-clock deadline of its call (the agent stamps nothing itself: the
// link does, plane/agentapi's deadline.go), and the host refuses one that
// arrives after it (ErrRequestExpired). A call that goes unanswered —
// ErrUnreachable, or its context ended — may still land until then: a
// healed partition delivers it late. So before the Migrator acts as if such
// a call never happened (undoing, giving the address back, retrying
// elsewhere), it waits until that deadline, plus the hosts' clock skew, has
// passed: then the request has landed or will be refused.
//
// Each host the Migrator reaches goes through a fencedHost, which bounds
// every call (a call without a deadline gets the step timeout) and records
// the latest deadline of an unanswered one. Lease grants (Lease,
// ClaimAddress) are fenced sooner by their own NotAfter: a grant that
// arrives after it is refused.
//
// After a plane crash the calls the dead plane left in flight are unknown:
// the journal is written before every step, and every call of a step is
// bounded by that write plus the step timeout, so Recover waits until the
// record's Updated plus the step timeout plus the skew before it acts.
// (The only calls made outside a step are the reads before a migration is
// journalled and, after its last step, the removal of its own dumps
// (DropImage): the dump is named after the migration, so a late drop
// harms nothing.)

// fences holds, per host name, by when every unanswered call made to it
// has landed or can no longer land (on the plane's clock, skew excluded).
type fences struct {
	mu    sync.Mutex
	until map[string]time.Time
}

func (f *fences) note(host string, deadline time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.until == nil {
		f.until = map[string]time.Time{}
	}
	if deadline.After(f.until[host]) {
		f.until[host] = deadline
	}
}

func (f *fences) of(host string) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.until[host]
}

// settle waits until no call this Migrator made to any of hosts and left
// unanswered can still land. Like waitLapse it ignores ctx's end: acting
// sooner could let a late request undo what the plane does next.
func (m *Migrator) settle(ctx context.Context, hosts ...Host) {
	var until time.Time
	var who string
	for _, h := range hosts {
		if t := m.fences.of(h.Name()); t.After(until) {
			until, who = t, h.Name()
		}
	}
	if until.IsZero() {
		return
	}
	m.waitQuiet(until.Add(m.skew), zap.String("host", who), zap.String("why", "an unanswered request may still land"))
}

// waitQuiet sleeps until t.
func (m *Migrator) waitQuiet(t time.Time, fields ...zap.Field) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	m.log.Warn("waiting out requests in flight before acting", append(fields, zap.Duration("wait", d))...)
	time.Sleep(d)
}

// fencedHost is a Host as the Migrator reaches it.
type fencedHost struct {
	h Host
	m *Migrator
}

var _ Host = fencedHost{}

// unanswered says the request may have been sent and not yet landed.
func unanswered(ctx context.Context, err error) bool {
	if err == nil || errors.Is(err, ErrRequestExpired) {
		return false
	}
	return errors.Is(err, ErrUnreachable) || ctx.Err() != nil
}

// call runs one call under a bounded context and notes its deadline if it
// goes unanswered; grant, if set, is the NotAfter of the lease it carries,
// after which the host refuses it anyway.
func fenced[T any](f fencedHost, ctx context.Context, grant time.Time, fn func(context.Context) (T, error)) (T, error) {
	return fencedWithin(f, ctx, grant, f.m.timeout, fn)
}

// quickCall bounds the calls that run no CRIU and move no image (status,
// addresses, leases, guards, probes) far below a step: one of them left
// unanswered costs the plane only this long a wait before it may undo,
// not a whole step timeout with the container perhaps not serving.
const quickCall = 15 * time.Second

// fencedQuick is fenced for such a call.
func fencedQuick[T any](f fencedHost, ctx context.Context, grant time.Time, fn func(context.Context) (T, error)) (T, error) {
	return fencedWithin(f, ctx, grant, min(quickCall, f.m.timeout), fn)
}

// fencedWithin is fenced with calls bounded by limit from now (and by
// ctx's own deadline, if sooner).
func fencedWithin[T any](f fencedHost, ctx context.Context, grant time.Time, limit time.Duration, fn func(context.Context) (T, error)) (T, error) {
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > limit {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	dl, _ := ctx.Deadline()
	v, err := fn(ctx)
	if unanswered(ctx, err) {
		if !grant.IsZero() && grant.Before(dl) {
			dl = grant
		}
		f.m.fences.note(f.h.Name(), dl)
	}
	return v, err
}

func (f fencedHost) Name() string { return f.h.Name() }
func (f fencedHost) Close() error { return f.h.Close() }

// Address is the agent's address, if the host has one (peerAddress).
func (f fencedHost) Address() string { return peerAddress(f.h) }

func (f fencedHost) Hello(ctx context.Context) (HostInfo, error) {
	return fencedQuick(f, ctx, time.Time{}, f.h.Hello)
}

func (f fencedHost) Status(ctx context.Context, id string) (ContainerStatus, error) {
	return fencedQuick(f, ctx, time.Time{}, func(ctx context.Context) (ContainerStatus, error) { return f.h.Status(ctx, id) })
}

func (f fencedHost) Start(ctx context.Context, s Spec, opts StartOptions) (StepResult, error) {
	return fenced(f, ctx, time.Time{}, func(ctx context.Context) (StepResult, error) { return f.h.Start(ctx, s, opts) })
}

func (f fencedHost) Restart(ctx context.Context, s Spec) (StepResult, error) {
	return fenced(f, ctx, time.Time{}, func(ctx context.Context) (StepResult, error) { return f.h.Restart(ctx, s) })
}

func (f fencedHost) Kill(ctx context.Context, id string) (StepResult, error) {
	return fenced(f, ctx, time.Time{}, func(ctx context.Context) (StepResult, error) { return f.h.Kill(ctx, id) })
}

func (f fencedHost) Remove(ctx context.Context, id string) (StepResult, error) {
	return fenced(f, ctx, time.Time{}, func(ctx context.Context) (StepResult, error) { return f.h.Remove(ctx, id) })
}

func (f fencedHost) Checkpoint(ctx context.Context, id string, image ImageName, opts CheckpointOptions) (CheckpointResult, error) {
	return fenced(f, ctx, time.Time{}, func(ctx context.Context) (CheckpointResult, error) { return f.h.Checkpoint(ctx, id, image, opts) })
}

func (f fencedHost) Restore(ctx context.Context, s Spec, image ImageName, opts RestoreOptions) (RestoreResult, error) {
	return fenced(f, ctx, time.Time{}, func(ctx context.Context) (RestoreResult, error) { return f.h.Restore(ctx, s, image, opts) })
}

func (f fencedHost) Stage(ctx context.Context, s Spec, image ImageName, opts StageOptions) (StepResult, error) {
	return fenced(f, ctx, time.Time{}, func(ctx context.Context) (StepResult, error) { return f.h.Stage(ctx, s, image, opts) })
}

func (f fencedHost) StartStaged(ctx context.Context, s Spec, image ImageName, opts StartStagedOptions) (RestoreResult, error) {
	return fenced(f, ctx, time.Time{}, func(ctx context.Context) (RestoreResult, error) { return f.h.StartStaged(ctx, s, image, opts) })
}

func (f fencedHost) VerifyImage(ctx context.Context, image ImageName) (int64, error) {
	return fenced(f, ctx, time.Time{}, func(ctx context.Context) (int64, error) { return f.h.VerifyImage(ctx, image) })
}

func (f fencedHost) DropImage(ctx context.Context, image ImageName) (StepResult, error) {
	return fencedQuick(f, ctx, time.Time{}, func(ctx context.Context) (StepResult, error) { return f.h.DropImage(ctx, image) })
}

func (f fencedHost) EnsureImage(ctx context.Context, ref string, from *Peer) (ImageResult, error) {
	return fenced(f, ctx, time.Time{}, func(ctx context.Context) (ImageResult, error) { return f.h.EnsureImage(ctx, ref, from) })
}

func (f fencedHost) Offer(ctx context.Context, what Offer) (Ticket, error) {
	return fencedQuick(f, ctx, time.Time{}, func(ctx context.Context) (Ticket, error) { return f.h.Offer(ctx, what) })
}

func (f fencedHost) Fetch(ctx context.Context, image ImageName, from Peer) (TransferResult, error) {
	return fenced(f, ctx, time.Time{}, func(ctx context.Context) (TransferResult, error) { return f.h.Fetch(ctx, image, from) })
}

func (f fencedHost) PrepareNetwork(ctx context.Context, s Spec, withAddress bool) (StepResult, error) {
	return fencedQuick(f, ctx, time.Time{}, func(ctx context.Context) (StepResult, error) { return f.h.PrepareNetwork(ctx, s, withAddress) })
}

func (f fencedHost) RemoveNetwork(ctx context.Context, id string) (StepResult, error) {
	return fencedQuick(f, ctx, time.Time{}, func(ctx context.Context) (StepResult, error) { return f.h.RemoveNetwork(ctx, id) })
}

func (f fencedHost) ReleaseAddress(ctx context.Context, id string, ip netip.Prefix) (StepResult, error) {
	return fencedQuick(f, ctx, time.Time{}, func(ctx context.Context) (StepResult, error) { return f.h.ReleaseAddress(ctx, id, ip) })
}

func (f fencedHost) ClaimAddress(ctx context.Context, id string, ip netip.Prefix, opts ClaimOptions) (StepResult, error) {
	// The grant comes first: after its NotAfter the claim is refused whole.
	return fencedQuick(f, ctx, opts.Lease.NotAfter, func(ctx context.Context) (StepResult, error) { return f.h.ClaimAddress(ctx, id, ip, opts) })
}

func (f fencedHost) Announce(ctx context.Context, id string, ip netip.Addr, opts AnnounceOptions) (StepResult, error) {
	return fencedQuick(f, ctx, time.Time{}, func(ctx context.Context) (StepResult, error) { return f.h.Announce(ctx, id, ip, opts) })
}

func (f fencedHost) Probe(ctx context.Context, ip netip.Addr, ignoreMAC string, d time.Duration) (ProbeResult, error) {
	return fencedQuick(f, ctx, time.Time{}, func(ctx context.Context) (ProbeResult, error) { return f.h.Probe(ctx, ip, ignoreMAC, d) })
}

func (f fencedHost) StartSentry(ctx context.Context, ip netip.Addr, ignoreMAC string, min time.Duration) (SentryID, error) {
	return fencedQuick(f, ctx, time.Time{}, func(ctx context.Context) (SentryID, error) { return f.h.StartSentry(ctx, ip, ignoreMAC, min) })
}

func (f fencedHost) StopSentry(ctx context.Context, id SentryID) (ProbeResult, error) {
	return fencedQuick(f, ctx, time.Time{}, func(ctx context.Context) (ProbeResult, error) { return f.h.StopSentry(ctx, id) })
}

func (f fencedHost) SetGuards(ctx context.Context, id string, g Guards, on bool) (StepResult, error) {
	return fencedQuick(f, ctx, time.Time{}, func(ctx context.Context) (StepResult, error) { return f.h.SetGuards(ctx, id, g, on) })
}

func (f fencedHost) NetworkLocks(ctx context.Context, id string, remove bool) ([]string, error) {
	return fencedQuick(f, ctx, time.Time{}, func(ctx context.Context) ([]string, error) { return f.h.NetworkLocks(ctx, id, remove) })
}

func (f fencedHost) Lease(ctx context.Context, id string, l Lease) (LeaseState, error) {
	return fencedQuick(f, ctx, l.NotAfter, func(ctx context.Context) (LeaseState, error) { return f.h.Lease(ctx, id, l) })
}
