package lab_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// TestAgentRunsAContainer: the plane, through h1's agent over the fabric,
// starts redis inside h1's own namespaces at a service address, a client
// reaches it over the fabric, the agent checkpoints it into shared storage
// and removes it. This is the whole path the plane uses, on a host that is
// a machine of its own.
func TestAgentRunsAContainer(t *testing.T) {
	inv := labtest.Ensure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	agent := labtest.AgentClient(t, inv, "h1")
	ip := netip.MustParsePrefix("198.18.1.240/15")
	spec := migrate.Spec{ID: "lab-agent-redis", Image: inv.Images["redis"].Ref, IP: ip, MAC: "02:42:c6:12:01:f0",
		Args: []string{"/usr/bin/redis-server", "--protected-mode", "no", "--save", ""}}
	_, _ = agent.Remove(ctx, spec.ID) // a previous failed run
	t.Cleanup(func() { _, _ = agent.Remove(context.Background(), spec.ID) })
	lease := migrate.Lease{IP: ip.Addr(), Generation: uint64(time.Now().UnixNano()), NotAfter: time.Now().Add(time.Hour)}
	if _, err := agent.Start(ctx, spec, migrate.StartOptions{Address: true, Lease: lease}); err != nil {
		t.Fatalf("start through the agent: %v", err)
	}
	st, err := agent.Status(ctx, spec.ID)
	if err != nil || st.Status != migrate.Running {
		t.Fatalf("status after start: %+v %v", st, err)
	}
	r := labtest.DialRedis(t, inv, ip.Addr(), 20*time.Second)
	for want := int64(1); want <= 3; want++ {
		if n, err := r.Incr("lab", 5*time.Second); err != nil || n != want {
			t.Fatalf("INCR from the client namespace: %d %v", n, err)
		}
	}
	// CRIU runs inside the host's mount namespace, the image goes to the
	// shared storage, and the connection survives the dump.
	image := migrate.ImageName("lab-test/agent-redis")
	t.Cleanup(func() { _, _ = agent.DropImage(context.Background(), image) })
	res, err := agent.Checkpoint(ctx, spec.ID, image, migrate.CheckpointOptions{})
	if err != nil || res.Bytes == 0 {
		t.Fatalf("checkpoint through the agent: %+v %v", res, err)
	}
	if n, err := agent.VerifyImage(ctx, image); err != nil || n == 0 {
		t.Fatalf("verify the image on h1: %d %v", n, err)
	}
	if n, err := r.Incr("lab", 5*time.Second); err != nil || n != 4 {
		t.Fatalf("INCR after the checkpoint: %d %v", n, err)
	}
	if _, err := agent.Remove(ctx, spec.ID); err != nil {
		t.Fatalf("remove through the agent: %v", err)
	}
	if st, err := agent.Status(ctx, spec.ID); err != nil || st.Status != migrate.Absent {
		t.Fatalf("status after remove: %+v %v", st, err)
	}
}
