package plane_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"github.com/escape-mtd/escape/plane"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// TestPlaneServesFromItsOwnMachine runs the real escape-plane binary in the
// lab's plane namespace: a network namespace on the fabric and a mount
// namespace in which no host's containerd socket, runc root, CRIU work
// directory or agent state exists. Whatever it does to a host it can only
// do through that host's agent over mutual TLS, so if any step touched a
// host-local path, the deploy, the checkpoint or the migration below
// would fail. Operators reach it over mutual TLS from the client
// namespace; an agent's certificate cannot act.
func TestPlaneServesFromItsOwnMachine(t *testing.T) {
	inv := labtest.Ensure(t)
	bin, err := labtest.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	const id = "pl-serve"
	cfg, err := inv.PlaneConfig()
	if err != nil {
		t.Fatal(err)
	}
	// The plane's own files, inside its machine: a state and audit log for
	// this test only.
	cfg.State, cfg.Audit = "/var/lib/escape/test-serve.db", "/var/log/escape/test-serve-audit.jsonl"
	cfg.Socket = "/run/escape/test-serve.sock"
	cfg.Listen = ""
	cfg.Defaults = plane.PolicyOverrides{CleanEpochs: ptr(1)}
	cfg.Containers = []plane.ContainerConfig{{ID: id, Image: lab.ImageRef("redis"), Host: "h2", IP: "198.18.1.247",
		Args: []string{"/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"}}}
	// Whatever a failed earlier run left on the hosts goes, before and after.
	removeEverywhere := func() {
		for _, h := range inv.Hosts {
			if _, err := labtest.AgentClient(t, inv, h.Name).Remove(context.Background(), id); err != nil {
				t.Errorf("remove %s from %s: %v", id, h.Name, err)
			}
		}
	}
	removeEverywhere()
	t.Cleanup(removeEverywhere)
	outside := func(inside string) string { // the same file as the root namespace sees it
		for _, b := range [][2]string{{"/var/lib/escape", "state"}, {"/var/log/escape", "log"}, {"/etc/escape", "etc"}} {
			if rest, ok := strings.CutPrefix(inside, b[0]); ok {
				if b[1] == "log" {
					return filepath.Join(inv.Plane.LogDir, rest)
				}
				return filepath.Join(inv.Plane.Dir, b[1], rest)
			}
		}
		t.Fatalf("%s is not a plane machine path the test knows", inside)
		return ""
	}
	for _, f := range []string{cfg.State, cfg.Audit} {
		os.Remove(outside(f))
		t.Cleanup(func() { os.Remove(outside(f)) })
	}
	cfgPath := "/etc/escape/test-serve.yaml"
	if err := lab.WritePlaneConfig(cfg, outside(cfgPath)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(outside(cfgPath)) })

	logf, err := os.Create(filepath.Join(t.TempDir(), "plane.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := lab.Command(context.Background(), inv, "plane", filepath.Join(bin, "escape-plane"), "serve", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("escape-plane serve exited with %v; log %s", err, logf.Name())
			}
		case <-time.After(2 * time.Minute):
			_ = cmd.Process.Kill()
			t.Errorf("escape-plane serve did not stop on SIGTERM")
		}
	}
	defer stop()

	dial := lab.NetnsDialer(inv.Client.Netns)
	dialer := plane.WithDialer(func(ctx context.Context, _, address string) (net.Conn, error) { return dial(ctx, address) })
	operator := plane.NewTLSClient(inv.Plane.API, labtest.OperatorTLS(inv), dialer)
	var st plane.Status
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st = plane.Status{}
		err := operator.Do(ctx, "GET", "/v1/status", nil, &st)
		if err == nil && len(st.Containers) == 1 && st.Containers[0].State == "running" {
			break
		}
		select {
		case err := <-exited:
			logs, _ := os.ReadFile(logf.Name())
			t.Fatalf("escape-plane serve exited: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(logf.Name())
			t.Fatalf("the plane did not deploy %s within 2 minutes (last: %+v, %v)\n%s", id, st, err, logs)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if c := st.Containers[0]; c.Host != "h2" || !strings.HasPrefix(c.IP, "198.18.1.247/") {
		t.Fatalf("deployed %+v, want h2 at 198.18.1.247", c)
	}
	rc := labtest.DialRedis(t, inv, mustAddr(t, "198.18.1.247"), 15*time.Second)
	if n := incr(t, rc); n != 1 {
		t.Fatalf("first INCR = %d", n)
	}

	// An agent's certificate may report, never act; a client without a
	// certificate does not get past the handshake.
	agentFiles, err := inv.Issue(mtls.RoleAgent, "h1", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	src, err := mtls.NewSource(agentFiles)
	if err != nil {
		t.Fatal(err)
	}
	asAgent := plane.NewTLSClient(inv.Plane.API, src.ClientConfig(mtls.Identity{Role: mtls.RolePlane, Name: "plane"}), dialer)
	if err := asAgent.Do(ctx, "POST", "/v1/migrate", plane.ContainerRequest{Container: id, To: "h3"}, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("an agent's certificate asked for a migration: %v, want 403", err)
	}
	anonymous := plane.NewTLSClient(inv.Plane.API, &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}, dialer)
	if err := anonymous.Do(ctx, "GET", "/v1/status", nil, nil); err == nil {
		t.Fatal("a client without a certificate was answered")
	}

	// The operator checkpoints and migrates: state and address move h2 -> h3.
	var ck plane.CheckpointRecord
	if err := operator.Do(ctx, "POST", "/v1/checkpoint", plane.ContainerRequest{Container: id, Force: true}, &ck); err != nil {
		t.Fatalf("checkpoint over the API: %v\n%s", err, readFile(logf.Name()))
	}
	if ck.Host != "h2" || ck.Bytes == 0 {
		t.Fatalf("checkpoint %+v", ck)
	}
	if n := incr(t, rc); n != 2 {
		t.Fatalf("INCR after the checkpoint = %d", n)
	}
	if err := operator.Do(ctx, "POST", "/v1/migrate", plane.ContainerRequest{Container: id, To: "h3"}, nil); err != nil {
		t.Fatalf("migrate over the API: %v\n%s", err, readFile(logf.Name()))
	}
	if n := incr(t, rc); n != 3 {
		t.Fatalf("INCR on the same connection after the migration = %d, want 3", n)
	}
	if err := operator.Do(ctx, "GET", "/v1/status", nil, &st); err != nil || st.Containers[0].Host != "h3" {
		t.Fatalf("status after migration: %+v %v", st, err)
	}
	if err := operator.Do(ctx, "POST", "/v1/remove", plane.ContainerRequest{Container: id}, nil); err != nil {
		t.Fatalf("remove over the API: %v", err)
	}
	stop()
	evs, err := plane.ReadAudit(outside(cfg.Audit))
	if err != nil {
		t.Fatal(err)
	}
	var refused, migrated bool
	for _, e := range evs {
		refused = refused || (e.Kind == "auth" && strings.Contains(e.Actor, "agent/h1"))
		migrated = migrated || (e.Kind == "action" && e.Action == "migrate" && e.Outcome == "migrated" && e.Details["to"] == "h3")
	}
	if !refused || !migrated {
		t.Fatalf("audit log: refusal of the agent's call %v, migration to h3 %v:\n%+v", refused, migrated, evs)
	}
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
