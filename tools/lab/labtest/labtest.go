// Package labtest gives integration tests a running lab. Tests share the
// default lab, bringing it up once if needed and never tearing it down.
// Packages that use it must not run at the same time (make test runs
// packages one at a time): fault tests stop agents and cut hosts off on
// purpose.
package labtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/plane/agentapi"
	"github.com/escape-mtd/escape/tools/doctor"
	"github.com/escape-mtd/escape/tools/lab"
)

// Ensure returns the inventory of the default lab, bringing it up with
// lab.DefaultHosts hosts, their agents and shared storage if it is not up.
// The agents run the repository's bin/escape-sensor (make build makes it,
// before the tests). Where the machine cannot run the lab it fails with
// the doctor's reason: the lab machines can, so that is a real failure.
//
// Under -short (make test-unit: no root, no lab) it skips: that run asks
// for the tests that need no lab.
//
// $ESCAPE_LAB names another lab than the default (lab.WithName): two
// checkouts can then run their lab tests on one machine at once, each on
// a lab of its own.
func Ensure(t testing.TB) *lab.Inventory {
	t.Helper()
	if Child() != "" {
		// Inside a host (InHost): the parent made sure of the lab.
		return childInventory(t)
	}
	if testing.Short() {
		t.Skip("needs the lab: not run with -short")
	}
	bin, err := BinDir()
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	if reason := doctor.LabUnavailable(context.Background()); reason != "" {
		t.Fatalf("lab unavailable on this machine: %s", reason)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// A host may be unhealthy on purpose for a moment (a fault test stops
	// its agent): look again before rebuilding, because a rebuild pulls
	// the lab from under whoever else is using it.
	for i := 0; i < 20; i++ {
		st := lab.GetStatus(ctx, named()...)
		if st.Healthy() && len(st.Inventory.Hosts) >= lab.DefaultHosts && st.Inventory.Agents && st.Inventory.BinDir == bin {
			// Tests run the agent they were built with.
			if err := lab.RestartStaleAgents(ctx, st.Inventory, nil); err != nil {
				t.Fatalf("restart agents on the rebuilt binary: %v", err)
			}
			return st.Inventory
		}
		if !st.Up {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	inv, err := lab.Up(ctx, append(named(), lab.WithHosts(lab.DefaultHosts), lab.WithBinDir(bin))...)
	if err != nil {
		t.Fatalf("bring the lab up: %v", err)
	}
	return inv
}

// BinDir is the repository's bin directory, found from the module root
// above the working directory (a test's is its package's); it must hold
// escape-sensor.
func BinDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: cannot find the repository's bin/")
		}
		dir = parent
	}
	bin := filepath.Join(dir, "bin")
	if _, err := os.Stat(filepath.Join(bin, "escape-sensor")); err != nil {
		return "", errors.New(filepath.Join(bin, "escape-sensor") + " is missing: run make build before the lab tests")
	}
	return bin, nil
}

// PlaneDialer dials from inside the lab's plane network namespace, so that
// a plane run in-process by a test reaches the agents only over the fabric,
// as from its own machine (plane.WithAgentDialer).
func PlaneDialer(inv *lab.Inventory) agentapi.Dialer { return lab.NetnsDialer(inv.Plane.Netns) }

// OperatorTLS is the client configuration of the lab's operator identity
// for the plane's API (it expects the server to be plane/plane). If the
// operator's files cannot be loaded, every handshake with it fails and
// says why.
func OperatorTLS(inv *lab.Inventory) *tls.Config {
	src, err := mtls.NewSource(inv.PKI.Operator)
	if err != nil {
		err = fmt.Errorf("lab operator certificate: %w", err)
		return &tls.Config{MinVersion: tls.VersionTLS13,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return nil, err },
			VerifyConnection:     func(tls.ConnectionState) error { return err }}
	}
	return src.ClientConfig(mtls.Identity{Role: mtls.RolePlane, Name: "plane"})
}

// AgentClient is a client of host's agent dialed as the plane: from the
// plane's network namespace, with the plane's certificate. It is closed
// when the test ends.
func AgentClient(t testing.TB, inv *lab.Inventory, host string) *agentapi.Client {
	t.Helper()
	c, err := lab.AgentClient(inv, host)
	if err != nil {
		t.Fatalf("agent client for %s: %v", host, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// named is the lab the tests use: $ESCAPE_LAB, else the default.
func named() []lab.Option {
	if name := os.Getenv("ESCAPE_LAB"); name != "" {
		return []lab.Option{lab.WithName(name)}
	}
	return nil
}
