// Package labtest gives integration tests a running lab. Tests share the
// default lab, bringing it up once if needed and never tearing it down.
// Packages that use it must not run at the same time (make test runs
// packages one at a time): fault tests stop hosts on purpose.
package labtest

import (
	"context"
	"testing"
	"time"

	"github.com/escape-mtd/escape/tools/doctor"
	"github.com/escape-mtd/escape/tools/lab"
)

// Ensure returns the inventory of the default lab, bringing it up with
// lab.DefaultHosts hosts if it is not up. Where the machine cannot run the
// lab (not root, no containerd, no CRIU), it skips with the doctor's reason.
func Ensure(t testing.TB) *lab.Inventory {
	t.Helper()
	if reason := doctor.LabUnavailable(context.Background()); reason != "" {
		t.Skipf("lab unavailable on this machine: %s", reason)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// A host may be unhealthy on purpose for a moment (a fault test stops
	// its containerd): look again before rebuilding, because a rebuild
	// pulls the lab from under whoever else is using it.
	for i := 0; i < 20; i++ {
		st := lab.GetStatus(ctx)
		if st.Healthy() && len(st.Inventory.Hosts) >= lab.DefaultHosts {
			return st.Inventory
		}
		if !st.Up {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	inv, err := lab.Up(ctx, lab.WithHosts(lab.DefaultHosts))
	if err != nil {
		t.Fatalf("bring the lab up: %v", err)
	}
	return inv
}
