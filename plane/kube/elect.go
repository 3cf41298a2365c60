package kube

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Leadable is what the election drives (plane.Plane).
type Leadable interface {
	// Lead is called when this replica gains the Lease; it settles the
	// previous terms' work (the journal) and acts from then on.
	Lead(ctx context.Context, self string) error
	// Follow is called when it loses the Lease, or sees another take it:
	// it stops acting at once.
	Follow(leader string)
}

// Election is a replica's candidacy for one coordination.k8s.io Lease.
type Election struct {
	cs        kubernetes.Interface
	namespace string
	name      string
	identity  string
	lease     time.Duration
	renew     time.Duration
	retry     time.Duration
	log       *zap.Logger
}

// ElectionOption tunes an Election.
type ElectionOption func(*Election)

// WithTimings sets client-go's lease duration, renew deadline and retry
// period (defaults 15s, 10s, 2s).
func WithTimings(lease, renew, retry time.Duration) ElectionOption {
	return func(e *Election) { e.lease, e.renew, e.retry = lease, renew, retry }
}

// WithElectionLogger sets the logger.
func WithElectionLogger(l *zap.Logger) ElectionOption { return func(e *Election) { e.log = l } }

// NewElection is identity's candidacy for the Lease namespace/name.
func NewElection(cs kubernetes.Interface, namespace, name, identity string, opts ...ElectionOption) (*Election, error) {
	e := &Election{cs: cs, namespace: namespace, name: name, identity: identity,
		lease: 15 * time.Second, renew: 10 * time.Second, retry: 2 * time.Second, log: zap.NewNop()}
	for _, o := range opts {
		o(e)
	}
	if identity == "" {
		return nil, fmt.Errorf("lease %s/%s: no identity for this replica", namespace, name)
	}
	if !(e.lease > e.renew && e.renew > e.retry && e.retry > 0) {
		return nil, fmt.Errorf("lease %s/%s: want lease duration %v > renew deadline %v > retry period %v > 0", namespace, name, e.lease, e.renew, e.retry)
	}
	return e, nil
}

// Run stands for the Lease until ctx ends: while it holds it, l leads;
// once it loses it, l follows and it stands again. When ctx ends a held
// Lease is released, so that another replica takes over at once rather
// than after the lease duration.
func (e *Election) Run(ctx context.Context, l Leadable) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: e.namespace, Name: e.name},
		Client:     e.cs.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: e.lease, RenewDeadline: e.renew, RetryPeriod: e.retry,
			ReleaseOnCancel: true, Name: e.namespace + "/" + e.name,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					e.log.Info("leading", zap.String("lease", e.name), zap.String("identity", e.identity))
					if err := l.Lead(lctx, e.identity); err != nil {
						e.log.Error("settling the previous terms' work", zap.Error(err))
					}
				},
				OnStoppedLeading: func() {
					e.log.Warn("lost the lease: acting stops", zap.String("lease", e.name))
					l.Follow("")
				},
				OnNewLeader: func(id string) {
					if id != e.identity {
						e.log.Info("following", zap.String("leader", id))
						l.Follow(id)
					}
				},
			},
		})
		if err != nil {
			return fmt.Errorf("lease %s/%s: %w", e.namespace, e.name, err)
		}
		le.Run(ctx)
	}
	return nil
}
