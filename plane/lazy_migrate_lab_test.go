package plane_test

import (
	"context"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// A staged migration whose destination restores the memory lazily: the
// copy stays held off the network until every page is in and its lease is
// pinned, and the client's connection carries on with its state.
func TestPlaneLazyMigration(t *testing.T) {
	inv := labtest.Ensure(t)
	cfg := labConfig(t, inv, plane.PolicyOverrides{})
	cfg.LazyRestoreFrom = "always" // the test's redis is far below the default
	p := openLabPlane(t, cfg, inv)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const id = "pl-lazy-mig"
	c, err := p.Deploy(ctx, plane.ContainerConfig{ID: id, Image: lab.ImageRef("redis"), Host: "h1", IP: "198.18.1.248",
		Args: []string{"/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	rc := labtest.DialRedis(t, inv, c.Spec.IP.Addr(), 15*time.Second)
	for want := int64(1); want <= 3; want++ {
		if n := incr(t, rc); n != want {
			t.Fatalf("INCR = %d, want %d", n, want)
		}
	}
	res, err := p.Migrate(ctx, id, "h2", []string{"test"}, "test")
	if err != nil {
		t.Fatalf("lazy migration: %v", err)
	}
	if res.Outcome != migrate.Migrated || !res.Lazy {
		t.Fatalf("outcome %s, lazy %v; want migrated lazily", res.Outcome, res.Lazy)
	}
	t.Logf("lazy migration: frozen %v", res.Frozen)
	if n := incr(t, rc); n != 4 {
		t.Fatalf("INCR on the same connection after the lazy migration = %d, want 4", n)
	}
	if st := status(ctx, t, p, "h2", id); st.Status != migrate.Running || !st.Lease.Pinned {
		t.Fatalf("on h2: %s, lease %+v; want running with a pinned lease", st.Status, st.Lease)
	}
	if st := status(ctx, t, p, "h1", id); st.Status != migrate.Absent {
		t.Fatalf("on h1 after the migration: %s, want absent", st.Status)
	}
}
