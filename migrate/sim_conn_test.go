package migrate

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// simDefaultDeadline is the deadline a call without one gets
// (plane/agentapi.DefaultRequestDeadline).
const simDefaultDeadline = 2 * time.Minute

// simConn is one host as one plane reaches it.
type simConn struct {
	env   *simEnv
	link  *simLink
	plane *simPlane
}

var _ Host = (*simConn)(nil)

// blocked is a crashed plane's call: it never returns while the test runs.
func blocked[T any](c *simConn, method string) (T, error) {
	var zero T
	<-c.env.end
	return zero, fmt.Errorf("%s %s: plane %s crashed: %w", c.link.h.name, method, c.plane.name, ErrUnreachable)
}

// via sends one call through the plane, the link and its faults to the
// host, which applies op.
func via[T any](c *simConn, ctx context.Context, method, args string, op func() (T, error)) (T, error) {
	var zero T
	if c.plane.crashed() {
		return blocked[T](c, method)
	}
	h := c.link.h
	what := method + "(" + args + ")"
	if c.env.rec != nil {
		c.env.rec.call(ctx, h.name, method)
	}
	if c.env.latency != nil {
		time.Sleep(c.env.latency(h.name, method, args))
	}
	shot, err := c.link.admit(ctx, method)
	if err != nil {
		return zero, err
	}
	c.env.countCall(c.plane)
	// The request's deadline, as the link stamps it (plane/agentapi's
	// deadline.go: a call without one gets the default).
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(simDefaultDeadline)
	}
	// land is the request reaching the agent, which refuses it after its
	// deadline by the host's own clock, and else applies it.
	land := func(what string) (T, error) {
		if now := h.now(); !now.Before(dl) {
			h.w.mu.Lock()
			defer h.w.mu.Unlock()
			h.w.logf("%s %s -> refused: arrived %v after its deadline", h.name, what, now.Sub(dl))
			return zero, fmt.Errorf("%s %s: %w", h.name, method, ErrRequestExpired)
		}
		return apply(h, what, op)
	}
	unreachable := fmt.Errorf("%s %s: no answer: %w", h.name, method, ErrUnreachable)
	if shot == nil {
		if ca := c.env.crashAt.Load(); ca != nil && ca.strike(c.plane) {
			h.w.mu.Lock()
			h.w.logf("FAULT %s crashes after %s %s", c.plane.name, h.name, what)
			h.w.mu.Unlock()
			_, _ = land(what)
			c.plane.crash()
			return blocked[T](c, method)
		}
		return land(what)
	}
	h.w.mu.Lock()
	h.w.logf("FAULT %s strikes %s %s", shot.kind, h.name, what)
	h.w.mu.Unlock()
	switch shot.kind {
	case faultDrop:
		return zero, unreachable
	case faultLost:
		_, _ = land(what)
		return zero, unreachable
	case faultDelay, faultDelayLate:
		d := c.env.delay
		if shot.kind == faultDelayLate {
			// Just after the deadline by the host's clock.
			d = time.Until(dl) - h.clock + 20*time.Millisecond
		}
		c.env.delayed.Add(1)
		go func() {
			defer c.env.delayed.Done()
			time.Sleep(d)
			_, _ = land("late " + what)
		}()
		return zero, unreachable
	case faultCrashBefore:
		c.plane.crash()
		return blocked[T](c, method)
	case faultCrashAfter:
		_, _ = land(what)
		c.plane.crash()
		return blocked[T](c, method)
	case faultPartition, faultDead, faultDeadBrief:
		c.link.start(shot.kind)
		return zero, unreachable
	case faultCutBefore:
		c.link.start(faultPartition)
		return zero, unreachable
	case faultCutAfter, faultDieAfter:
		_, _ = land(what)
		c.link.start(map[simFault]simFault{faultCutAfter: faultPartition, faultDieAfter: faultDead}[shot.kind])
		return zero, unreachable
	}
	return zero, fmt.Errorf("fault %v: not a call fault", shot.kind)
}

func (c *simConn) Name() string { return c.link.h.name }

func (c *simConn) Close() error { return nil }

func (c *simConn) Hello(ctx context.Context) (HostInfo, error) {
	return via(c, ctx, "Hello", "", func() (HostInfo, error) { return c.link.h.hello(), nil })
}

func (c *simConn) Status(ctx context.Context, id string) (ContainerStatus, error) {
	return via(c, ctx, "Status", id, func() (ContainerStatus, error) { return c.link.h.status(id), nil })
}

func (c *simConn) Start(ctx context.Context, s Spec, opts StartOptions) (StepResult, error) {
	return via(c, ctx, "Start", s.ID, func() (StepResult, error) { return c.link.h.startCtr(s, opts) })
}

func (c *simConn) Restart(ctx context.Context, s Spec) (StepResult, error) {
	return via(c, ctx, "Restart", s.ID, func() (StepResult, error) { return c.link.h.restart(s) })
}

func (c *simConn) Kill(ctx context.Context, id string) (StepResult, error) {
	return via(c, ctx, "Kill", id, func() (StepResult, error) { return c.link.h.kill(id) })
}

func (c *simConn) Remove(ctx context.Context, id string) (StepResult, error) {
	return via(c, ctx, "Remove", id, func() (StepResult, error) { return c.link.h.remove(id) })
}

func (c *simConn) Checkpoint(ctx context.Context, id string, image ImageName, opts CheckpointOptions) (CheckpointResult, error) {
	return via(c, ctx, "Checkpoint", fmt.Sprintf("%s, %s, exit=%v", id, image, opts.Exit), func() (CheckpointResult, error) {
		return c.link.h.checkpoint(id, image, opts)
	})
}

func (c *simConn) Restore(ctx context.Context, s Spec, image ImageName, opts RestoreOptions) (RestoreResult, error) {
	return via(c, ctx, "Restore", fmt.Sprintf("%s, %s, fresh=%v", s.ID, image, opts.Fresh), func() (RestoreResult, error) {
		return c.link.h.restore(s, image, opts)
	})
}

func (c *simConn) Stage(ctx context.Context, s Spec, image ImageName, opts StageOptions) (StepResult, error) {
	return via(c, ctx, "Stage", fmt.Sprintf("%s, %s", s.ID, image), func() (StepResult, error) { return c.link.h.stage(s, image, opts) })
}

func (c *simConn) StartStaged(ctx context.Context, s Spec, image ImageName, opts StartStagedOptions) (RestoreResult, error) {
	return via(c, ctx, "StartStaged", fmt.Sprintf("%s, %s", s.ID, image), func() (RestoreResult, error) {
		return c.link.h.startStaged(s, image, opts)
	})
}

func (c *simConn) VerifyImage(ctx context.Context, image ImageName) (int64, error) {
	return via(c, ctx, "VerifyImage", string(image), func() (int64, error) { return c.link.h.verifyImage(image) })
}

func (c *simConn) DropImage(ctx context.Context, image ImageName) (StepResult, error) {
	return via(c, ctx, "DropImage", string(image), func() (StepResult, error) { return c.link.h.dropImage(image) })
}

func (c *simConn) EnsureImage(ctx context.Context, ref string, from *Peer) (ImageResult, error) {
	return via(c, ctx, "EnsureImage", fmt.Sprintf("%s, from=%v", ref, from != nil), func() (ImageResult, error) {
		return c.link.h.ensureImage(ref, from, c.env.alive)
	})
}

func (c *simConn) Offer(ctx context.Context, what Offer) (Ticket, error) {
	return via(c, ctx, "Offer", fmt.Sprintf("%s %s to %s", what.Kind, what.Name, what.To), func() (Ticket, error) { return c.link.h.offer(what) })
}

func (c *simConn) Fetch(ctx context.Context, image ImageName, from Peer) (TransferResult, error) {
	return via(c, ctx, "Fetch", fmt.Sprintf("%s from %s", image, from.Name), func() (TransferResult, error) {
		return c.link.h.fetch(image, from, c.env.alive)
	})
}

func (c *simConn) PrepareNetwork(ctx context.Context, s Spec, withAddress bool) (StepResult, error) {
	return via(c, ctx, "PrepareNetwork", fmt.Sprintf("%s, address=%v", s.ID, withAddress), func() (StepResult, error) {
		return c.link.h.prepareNetwork(s, withAddress)
	})
}

func (c *simConn) RemoveNetwork(ctx context.Context, id string) (StepResult, error) {
	return via(c, ctx, "RemoveNetwork", id, func() (StepResult, error) { return c.link.h.removeNetwork(id) })
}

func (c *simConn) ReleaseAddress(ctx context.Context, id string, ip netip.Prefix) (StepResult, error) {
	return via(c, ctx, "ReleaseAddress", id, func() (StepResult, error) { return c.link.h.releaseAddress(id, ip) })
}

func (c *simConn) ClaimAddress(ctx context.Context, id string, ip netip.Prefix, opts ClaimOptions) (StepResult, error) {
	return via(c, ctx, "ClaimAddress", fmt.Sprintf("%s, %s", id, leaseArgs(opts.Lease)), func() (StepResult, error) {
		return c.link.h.claimAddress(id, ip, opts)
	})
}

func (c *simConn) Announce(ctx context.Context, id string, ip netip.Addr, opts AnnounceOptions) (StepResult, error) {
	return via(c, ctx, "Announce", id, func() (StepResult, error) { return c.link.h.announce(id) })
}

func (c *simConn) Probe(ctx context.Context, ip netip.Addr, ignoreMAC string, d time.Duration) (ProbeResult, error) {
	return via(c, ctx, "Probe", ip.String(), func() (ProbeResult, error) { return c.link.h.probe(ip, ignoreMAC) })
}

func (c *simConn) StartSentry(ctx context.Context, ip netip.Addr, ignoreMAC string, min time.Duration) (SentryID, error) {
	return via(c, ctx, "StartSentry", ip.String(), func() (SentryID, error) { return c.link.h.startSentry() })
}

func (c *simConn) StopSentry(ctx context.Context, id SentryID) (ProbeResult, error) {
	w := c.env.w
	return via(c, ctx, "StopSentry", string(id), func() (ProbeResult, error) {
		return c.link.h.stopSentry(id, w.spec.IP.Addr(), w.spec.MAC)
	})
}

func (c *simConn) SetGuards(ctx context.Context, id string, g Guards, on bool) (StepResult, error) {
	return via(c, ctx, "SetGuards", fmt.Sprintf("%s, %d, on=%v", id, g, on), func() (StepResult, error) { return c.link.h.setGuards(id, g, on) })
}

func (c *simConn) NetworkLocks(ctx context.Context, id string, remove bool) ([]string, error) {
	return via(c, ctx, "NetworkLocks", id, func() ([]string, error) { return nil, nil })
}

func (c *simConn) Lease(ctx context.Context, id string, l Lease) (LeaseState, error) {
	return via(c, ctx, "Lease", fmt.Sprintf("%s, %s", id, leaseArgs(l)), func() (LeaseState, error) { return c.link.h.lease(id, l) })
}

func leaseArgs(l Lease) string {
	switch {
	case l.Revoke:
		return fmt.Sprintf("revoke g%d", l.Generation)
	case l.TTL == 0:
		return fmt.Sprintf("pin g%d", l.Generation)
	default:
		return fmt.Sprintf("arm g%d ttl %v", l.Generation, l.TTL)
	}
}

// simJournal is the plane's journal; every plane sees it through its own
// view, so that a crashed plane writes nothing more.
type simJournal struct {
	mu   sync.Mutex
	recs map[string]Record
}

type simJournalView struct {
	j     *simJournal
	plane *simPlane
	end   chan struct{}
}

func (v simJournalView) dead() error {
	if !v.plane.crashed() {
		return nil
	}
	<-v.end
	return fmt.Errorf("journal: plane %s crashed", v.plane.name)
}

func (v simJournalView) PutMigration(ctx context.Context, r Record) error {
	if err := v.dead(); err != nil {
		return err
	}
	v.j.mu.Lock()
	defer v.j.mu.Unlock()
	v.j.recs[r.Spec.ID] = r
	return nil
}

func (v simJournalView) Migrations(ctx context.Context) ([]Record, error) {
	if err := v.dead(); err != nil {
		return nil, err
	}
	v.j.mu.Lock()
	defer v.j.mu.Unlock()
	var out []Record
	for _, r := range v.j.recs {
		out = append(out, r)
	}
	return out, nil
}

func (v simJournalView) DeleteMigration(ctx context.Context, container string) error {
	if err := v.dead(); err != nil {
		return err
	}
	v.j.mu.Lock()
	defer v.j.mu.Unlock()
	delete(v.j.recs, container)
	return nil
}

func (j *simJournal) len() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.recs)
}
