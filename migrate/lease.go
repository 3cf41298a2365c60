package migrate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Address handoffs between hosts, and the leases that keep them safe when
// a host stops answering.
//
// In steady state a container's address lease is pinned on its host: a
// plane that is away never takes a container down. For a handoff, the
// plane arms the lease (a TTL the host's kernel counts down), renews it
// while the handoff runs, and pins it again on whichever host ends up
// with the address. If a host stops answering mid-handoff — a partition,
// a dead agent, an expired certificate — the plane does not guess whether
// it is dead: it waits until the armed lease must have lapsed, when that
// host's kernel has fenced the address whether its agent is alive or not,
// and only then lets another host take the address. A lease's generation
// grows with every grant, and a host refuses an older one, so a command
// delayed in the network can never hand the address back to a copy the
// plane has moved on from.

// lapseMargin is added to a grant's deadline when waiting for it to
// lapse: the scheduling of the host's kernel timer and of the plane's own.
const lapseMargin = 250 * time.Millisecond

// grant returns l bounded to now+TTL: the deadline the host must apply it
// by and, when armed, lapse by.
func (m *Migrator) grant(l Lease) (Lease, time.Time) {
	bound := m.leaseTTL
	if l.TTL > 0 {
		bound = l.TTL
	}
	l.NotAfter = m.now().Add(bound)
	return l, l.NotAfter.Add(m.skew + lapseMargin)
}

// renewal keeps one armed lease alive on one host until stopped.
type renewal struct {
	m     *Migrator
	host  Host
	id    string
	lease Lease

	mu sync.Mutex
	// lapse is by when the newest grant sent has lapsed for sure, whether
	// or not it arrived: its NotAfter, plus the hosts' clock skew.
	lapse time.Time
	stop  chan struct{}
	done  chan struct{}
}

// armLease grants l (with its TTL) on h and keeps renewing it every TTL/4
// until the renewal is stopped. The first grant must succeed.
func (m *Migrator) armLease(ctx context.Context, h Host, id string, l Lease) (*renewal, error) {
	if l.TTL <= 0 {
		return nil, errors.New("arm lease: a TTL is required")
	}
	r := &renewal{m: m, host: h, id: id, lease: l, stop: make(chan struct{}), done: make(chan struct{})}
	if err := r.renew(ctx); err != nil {
		return nil, fmt.Errorf("arm the lease of %s on %s: %w", id, h.Name(), err)
	}
	go r.run(context.WithoutCancel(ctx))
	return r, nil
}

// renew sends one grant; its lapse counts from before it is sent.
func (r *renewal) renew(ctx context.Context) error {
	l, lapse := r.m.grant(r.lease)
	r.mu.Lock()
	r.lapse = lapse
	r.mu.Unlock()
	_, err := r.host.Lease(ctx, r.id, l)
	return err
}

func (r *renewal) run(ctx context.Context) {
	defer close(r.done)
	t := time.NewTicker(r.lease.TTL / 4)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		// The request's deadline must outlast the hosts' clock skew: a
		// host whose clock is ahead refuses a request that arrives after
		// its deadline by its own clock (ErrRequestExpired).
		cctx, cancel := context.WithTimeout(ctx, r.lease.TTL/4+r.m.skew)
		err := r.renew(cctx)
		cancel()
		if err != nil {
			r.m.log.Warn("lease renewal failed", zap.String("container", r.id), zap.String("host", r.host.Name()), zap.Error(err))
		}
	}
}

// halt stops renewing and returns by when the lease lapses at the latest,
// if it is not pinned or revoked meanwhile.
func (r *renewal) halt() time.Time {
	if r == nil {
		return time.Time{}
	}
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lapse
}

// waitLapse sleeps until deadline, when a lease that was not renewed has
// lapsed for sure. It ignores ctx's cancellation: giving up the wait
// could let two copies serve one address.
func (m *Migrator) waitLapse(ctx context.Context, host, id string, deadline time.Time) {
	d := time.Until(deadline)
	if d <= 0 {
		return
	}
	m.log.Warn("host unreachable: waiting for its lease to lapse before the address moves", zap.String("container", id),
		zap.String("host", host), zap.Duration("wait", d))
	time.Sleep(d)
}

// nextGeneration advances and journals the record's lease generation, so
// that no grant is ever reused after a crash.
func (r *run) nextGeneration(ctx context.Context) (uint64, error) {
	r.rec.Generation++
	if err := r.save(ctx); err != nil {
		return 0, err
	}
	return r.rec.Generation, nil
}

// pin makes the lease on h hold until revoked. A pin that arrives after
// its deadline is refused: it returns by when an unanswered pin can no
// longer take effect.
func (m *Migrator) pin(ctx context.Context, h Host, id string, l Lease) (time.Time, error) {
	l.TTL = 0
	g, lapse := m.grant(l)
	if _, err := h.Lease(ctx, id, g); err != nil {
		return lapse, fmt.Errorf("pin the lease of %s on %s: %w", id, h.Name(), err)
	}
	return lapse, nil
}

// Handoff moves the address of a container from its copy on from to a copy
// already running on to (a stateless container's replica), under the
// leases a migration uses: generation is the one the address holds on
// from; to gets generation+1, and a handoff that fails gives it back to
// from with generation+2. The caller journals generation+2 before the
// call. It returns the generation the address ends with, and where. A
// host that stops answering once the address may be on it, held by a lease
// that lapses, is asked again until it answers or ctx ends.
func (m *Migrator) Handoff(ctx context.Context, spec Spec, from, to string, generation uint64) (string, uint64, error) {
	src, err := m.host(from)
	if err != nil {
		return from, generation, err
	}
	dst, err := m.host(to)
	if err != nil {
		return from, generation, err
	}
	ip := spec.IP.Addr()
	giveBack := func(cause error) (string, uint64, error) {
		bctx := context.WithoutCancel(ctx)
		// A release (or any request) the source left unanswered lands
		// before the claim, or never: late, it would take the address
		// back. (The destination's late requests cannot put the address
		// back on it: its claim and pin are grants, fenced by their
		// NotAfter, and its release was answered.)
		m.settle(ctx, src)
		// The source has released the address, or may hold it under an
		// armed lease no one renews: until it answers a claim, no copy
		// may serve, and no one else would retry it.
		if err := m.untilAnswered(ctx, func() error {
			back, _ := m.grant(Lease{IP: ip, Generation: generation + 2})
			_, err := src.ClaimAddress(bctx, spec.ID, spec.IP, ClaimOptions{LastLook: m.last, Lease: back})
			return err
		}); err != nil {
			return from, generation + 2, fmt.Errorf("handoff of %s to %s: %w; and giving the address back to %s failed: %v", spec.ID, to, cause, from, err)
		}
		return from, generation + 2, fmt.Errorf("handoff of %s to %s (the address is back on %s): %w", spec.ID, to, from, cause)
	}
	srcLease, err := m.armLease(ctx, src, spec.ID, Lease{IP: ip, Generation: generation, TTL: m.leaseTTL})
	if err != nil {
		if errors.Is(err, ErrUnreachable) {
			// Unanswered, the grant may have been applied: the source's
			// lease, armed now and renewed by no one, would lapse under
			// its copy. Pin it again.
			return giveBack(err)
		}
		return from, generation, err
	}
	if _, err := src.ReleaseAddress(ctx, spec.ID, spec.IP); err != nil {
		if !errors.Is(err, ErrUnreachable) {
			srcLease.halt()
			return giveBack(err)
		}
		m.waitLapse(ctx, from, spec.ID, srcLease.halt())
	}
	srcLease.halt()
	l, lapse := m.grant(Lease{IP: ip, Generation: generation + 1, TTL: m.leaseTTL})
	_, err = dst.ClaimAddress(ctx, spec.ID, spec.IP, ClaimOptions{LastLook: m.probe, Lease: l})
	if err != nil {
		if errors.Is(err, ErrUnreachable) {
			m.waitLapse(ctx, to, spec.ID, lapse)
		}
		return giveBack(err)
	}
	if _, err := m.pin(ctx, dst, spec.ID, l); err != nil {
		// Unanswered, the pin may still have been applied: only a
		// destination that answers can give the address up then. Until
		// it answers a release, it holds the address pinned, or lets its
		// claim's armed lease lapse and then no copy serves. (Retrying the
		// pin instead would leave the unanswered releases in flight: one
		// landing after the pin took the address from the copy the
		// handoff said serves.)
		bctx := context.WithoutCancel(ctx)
		if rerr := m.untilAnswered(ctx, func() error { _, err := dst.ReleaseAddress(bctx, spec.ID, spec.IP); return err }); rerr != nil {
			return to, generation + 1, fmt.Errorf("handoff of %s to %s: %w; the destination may hold the address and does not answer: %v", spec.ID, to, err, rerr)
		}
		return giveBack(err)
	}
	if _, err := dst.Announce(ctx, spec.ID, ip, AnnounceOptions{Rounds: m.repeats, Interval: m.interval}); err != nil {
		m.log.Warn("announce after handoff", zap.String("container", spec.ID), zap.Error(err))
	}
	return to, generation + 1, nil
}

// untilAnswered calls fn, and again every TTL/4 while its host does not
// answer, until ctx ends.
func (m *Migrator) untilAnswered(ctx context.Context, fn func() error) error {
	t := time.NewTicker(m.leaseTTL / 4)
	defer t.Stop()
	for {
		err := fn()
		if err == nil || !errors.Is(err, ErrUnreachable) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}
