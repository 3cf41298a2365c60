// Package labtest gives integration tests a running lab. Tests share the
// default lab, bringing it up once if needed and never tearing it down, so
// packages that run in parallel do not rebuild it under each other.
package labtest

import (
	"context"
	"os"
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
	if st := lab.GetStatus(ctx); st.Healthy() && len(st.Inventory.Hosts) >= lab.DefaultHosts {
		return st.Inventory
	}
	inv, err := lab.Up(ctx, lab.WithHosts(lab.DefaultHosts))
	if err != nil {
		t.Fatalf("bring the lab up: %v", err)
	}
	return inv
}

// Root reports whether the test runs as root, the precondition of every
// privileged test.
func Root() bool { return os.Geteuid() == 0 }
