package kube_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/plane/kube"
)

// Test timings: short enough for a test, long enough for this loaded
// machine to renew in time.
const (
	testLease = 8 * time.Second
	testRenew = 5 * time.Second
	testRetry = 500 * time.Millisecond
)

// replica is one plane standing for the Lease.
type replica struct {
	id     string
	p      *plane.Plane
	cancel context.CancelFunc
	done   chan struct{}
}

func stand(t *testing.T, p *plane.Plane, e *kube.Election, id string) *replica {
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{id: id, p: p, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(r.done); _ = e.Run(ctx, p) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// acts says whether the replica's plane takes an action: flagging a host
// (the inventory's one host). A follower must refuse, naming the leader.
func acts(t *testing.T, r *replica) (bool, error) {
	_, err := r.p.Flag("node-1", false, "election test", "test")
	if err != nil && !errors.Is(err, plane.ErrNotLeader) {
		t.Fatalf("%s: flag: %v", r.id, err)
	}
	return err == nil, err
}

// Two replicas against one Lease: exactly one acts, the other refuses
// with the leader's name; cancelled, the leader releases the Lease and
// the other takes over within the lease duration; the old leader then
// refuses too.
func TestOneReplicaActsUnderTheLease(t *testing.T) {
	_, cs := cluster(t)
	ctx := context.Background()
	var rs []*replica
	for _, id := range []string{"plane-0", "plane-1"} {
		p := newPlane(t, plane.WithFollower())
		if err := p.SetHosts([]plane.HostConfig{{Name: "node-1", Agent: "127.0.0.1:1"}}); err != nil {
			t.Fatal(err)
		}
		if ok, err := p.Leader(); ok {
			t.Fatalf("%s leads before any election (%v)", id, err)
		}
		e, err := kube.NewElection(cs, "default", "escape-plane", id, kube.WithTimings(testLease, testRenew, testRetry))
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, stand(t, p, e, id))
	}
	var leader, follower *replica
	eventually(t, 2*testLease, "a leader", func() bool {
		a, _ := rs[0].p.Leader()
		b, _ := rs[1].p.Leader()
		switch {
		case a && b:
			t.Fatal("both replicas lead")
		case a:
			leader, follower = rs[0], rs[1]
		case b:
			leader, follower = rs[1], rs[0]
		}
		return leader != nil
	})
	// The follower learns who leads from the Lease.
	eventually(t, 2*testLease, "the follower knows the leader", func() bool {
		_, who := follower.p.Leader()
		return who == leader.id
	})
	if ok, err := acts(t, leader); !ok {
		t.Fatalf("the leader %s did not act: %v", leader.id, err)
	}
	ok, err := acts(t, follower)
	if ok {
		t.Fatalf("the follower %s acted", follower.id)
	}
	if want := "not the leader (leader is " + leader.id + ")"; !strings.Contains(err.Error(), want) {
		t.Errorf("the follower's refusal %q does not say %q", err, want)
	}
	l, err := cs.CoordinationV1().Leases("default").Get(ctx, "escape-plane", metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != leader.id {
		t.Fatalf("lease: %+v, %v; want held by %s", l, err, leader.id)
	}

	// The leader goes.
	start := time.Now()
	leader.cancel()
	<-leader.done
	if ok, _ := leader.p.Leader(); ok {
		t.Error("the cancelled leader still leads")
	}
	eventually(t, 2*testLease, "the follower takes over", func() bool {
		ok, _ := follower.p.Leader()
		return ok
	})
	took := time.Since(start)
	t.Logf("takeover after %v (lease duration %v)", took, testLease)
	if took > testLease {
		t.Errorf("takeover took %v, more than the lease duration %v", took, testLease)
	}
	if ok, err := acts(t, follower); !ok {
		t.Errorf("the new leader %s does not act: %v", follower.id, err)
	}
	if ok, _ := acts(t, leader); ok {
		t.Errorf("the old leader %s still acts", leader.id)
	}
}
