package plane

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Leadership: with several replicas (plane/kube's Lease), one only acts.
// A follower serves its status and refuses every action, naming the
// leader. Each term of leadership has a context that ends with it: the
// actions of a term run under it, so losing the lease stops them at once.
// A migration cut short that way stays in the journal; the replica settles
// it (migrate's Recover) when it leads again, as after a crash.

// ErrNotLeader is the error of an action asked of a follower.
var ErrNotLeader = errors.New("not the leader")

// NotLeaderError names the leader a follower knows of.
type NotLeaderError struct{ Leader string }

func (e *NotLeaderError) Error() string {
	leader := e.Leader
	if leader == "" {
		leader = "not known yet"
	}
	return fmt.Sprintf("not the leader (leader is %s)", leader)
}

// Is makes errors.Is(err, ErrNotLeader) hold.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// leadership is the replica's state in the election (zero: follower).
type leadership struct {
	mu      sync.Mutex
	leading bool
	leader  string
	term    context.Context
	end     context.CancelFunc
}

// WithFollower starts the plane as a follower: it acts only once Lead is
// called (plane/kube, when it holds the Lease). Without it the plane
// leads from the start, alone.
func WithFollower() Option { return func(p *Plane) { p.follower = true } }

func (l *leadership) begin(self string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.leading {
		return
	}
	l.term, l.end = context.WithCancel(context.Background())
	l.leading, l.leader = true, self
}

// mayAct is nil while leading, else the NotLeaderError.
func (p *Plane) mayAct() error {
	p.lead.mu.Lock()
	defer p.lead.mu.Unlock()
	if p.lead.leading {
		return nil
	}
	return &NotLeaderError{Leader: p.lead.leader}
}

// Leader says whether this replica leads, and who leads.
func (p *Plane) Leader() (leading bool, leader string) {
	p.lead.mu.Lock()
	defer p.lead.mu.Unlock()
	return p.lead.leading, p.lead.leader
}

// Lead makes this replica the leader (self is its identity), then
// settles what a previous term or run left (Start: migrations cut short
// are finished or undone from the journal, rollbacks redone, configured
// containers deployed). Start's error is returned; the replica leads
// whatever it says.
func (p *Plane) Lead(ctx context.Context, self string) error {
	p.lead.begin(self)
	p.event(AuditEvent{Kind: "config", Action: "leader", Outcome: "ok", Reasons: []string{self + " leads"}})
	return p.Start(ctx)
}

// Follow makes this replica a follower of leader (empty: not known):
// the term's actions under way are cancelled at once, and new ones are
// refused.
func (p *Plane) Follow(leader string) {
	p.lead.mu.Lock()
	was := p.lead.leading
	if p.lead.end != nil {
		p.lead.end()
	}
	p.lead.leading, p.lead.leader, p.lead.term, p.lead.end = false, leader, nil, nil
	p.lead.mu.Unlock()
	if was {
		p.event(AuditEvent{Kind: "config", Action: "leader", Outcome: "ok",
			Reasons: []string{"lost the lease: actions under way are cancelled; the journal keeps a migration cut short for the next term"}})
	}
}

// actionContext is what an action accepted now runs under: detached from
// its caller (a CLI that gives up, a SIGTERM must not leave it half
// done), bounded by actionTimeout, and ended with the term of leadership.
func (p *Plane) actionContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), actionTimeout)
	p.lead.mu.Lock()
	term := p.lead.term
	p.lead.mu.Unlock()
	if term == nil {
		return ctx, cancel
	}
	stop := context.AfterFunc(term, cancel)
	return ctx, func() { stop(); cancel() }
}
