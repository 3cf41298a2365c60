package lab_test

import (
	"context"
	"testing"
	"time"

	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// answers waits up to limit for host's agent to answer (want) or to stop
// answering (!want) the plane's Hello, each try on a fresh connection.
func answers(ctx context.Context, t *testing.T, inv *lab.Inventory, host string, want bool, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var err error
	for {
		err = lab.HelloAgent(ctx, inv, host)
		if (err == nil) == want {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if want {
		t.Fatalf("agent on %s does not answer after %v: %v", host, limit, err)
	}
	t.Fatalf("agent on %s still answers after %v", host, limit)
}

// reachable reports whether a TCP connection from the client namespace to
// host's agent port opens: a user on the network, not the plane.
func reachable(ctx context.Context, inv *lab.Inventory, host string) bool {
	h, _ := inv.Host(host)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := lab.NetnsDialer(inv.Client.Netns)(ctx, h.Agent)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// TestPartitionAndHeal: a partitioned host is off the fabric for everyone;
// healed, its agent answers the plane again. Both are idempotent.
func TestPartitionAndHeal(t *testing.T) {
	inv := labtest.Ensure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const host = "h2"
	t.Cleanup(func() { _ = lab.Heal(inv, host) })
	for range 2 {
		if err := lab.Partition(inv, host); err != nil {
			t.Fatal(err)
		}
	}
	answers(ctx, t, inv, host, false, 5*time.Second)
	if reachable(ctx, inv, host) {
		t.Error("a partitioned host is reachable from the client namespace")
	}
	answers(ctx, t, inv, "h1", true, 5*time.Second) // the others are not affected
	for range 2 {
		if err := lab.Heal(inv, host); err != nil {
			t.Fatal(err)
		}
	}
	answers(ctx, t, inv, host, true, 10*time.Second)
}

// TestCutPlaneLink: only the plane loses the host; a client still reaches it.
func TestCutPlaneLink(t *testing.T) {
	inv := labtest.Ensure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const host = "h3"
	t.Cleanup(func() { _ = lab.HealPlaneLink(inv, host) })
	for range 2 {
		if err := lab.CutPlaneLink(inv, host); err != nil {
			t.Fatal(err)
		}
	}
	if cut, err := lab.PlaneLinkCut(inv, host); err != nil || !cut {
		t.Fatalf("plane link of %s not reported cut: %v %v", host, cut, err)
	}
	answers(ctx, t, inv, host, false, 5*time.Second)
	if !reachable(ctx, inv, host) {
		t.Error("cutting the plane's link also cut the client's")
	}
	for range 2 {
		if err := lab.HealPlaneLink(inv, host); err != nil {
			t.Fatal(err)
		}
	}
	if cut, err := lab.PlaneLinkCut(inv, host); err != nil || cut {
		t.Fatalf("plane link of %s still cut after heal: %v %v", host, cut, err)
	}
	answers(ctx, t, inv, host, true, 10*time.Second)
}

// TestAgentKillStopStart: a killed or stopped agent stops answering and
// the lab reports it; StartAgent brings it back with the same config.
func TestAgentKillStopStart(t *testing.T) {
	inv := labtest.Ensure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const host = "h1"
	t.Cleanup(func() { _ = lab.StartAgent(context.Background(), inv, host, nil) })
	for _, stop := range []struct {
		name string
		do   func(context.Context, *lab.Inventory, string) error
	}{{"kill", lab.KillAgent}, {"stop", lab.StopAgent}} {
		for range 2 {
			if err := stop.do(ctx, inv, host); err != nil {
				t.Fatalf("%s agent: %v", stop.name, err)
			}
		}
		answers(ctx, t, inv, host, false, 5*time.Second)
		st := lab.GetStatus(ctx, named()...)
		if st.Healthy() || st.Hosts[0].Agent {
			t.Errorf("after %s, status says the agent is fine: %+v", stop.name, st.Hosts[0])
		}
		for range 2 {
			if err := lab.StartAgent(ctx, inv, host, nil); err != nil {
				t.Fatalf("start agent after %s: %v", stop.name, err)
			}
		}
		answers(ctx, t, inv, host, true, 5*time.Second)
		if st := lab.GetStatus(ctx, named()...); !st.Healthy() {
			t.Errorf("after start, status: %+v", st)
		}
	}
}
