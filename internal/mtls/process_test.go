package mtls

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The test binary re-executed with this variable set runs an agent's gRPC
// server instead of the tests (TestServerInAnotherProcess).
const helperEnv = "ESCAPE_MTLS_TEST_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelperServer())
	}
	os.Exit(m.Run())
}

// runHelperServer serves Health over mutual TLS with the files named in
// the environment, prints "listening <addr>", logs JSON to stderr, and
// exits when its stdin closes.
func runHelperServer() int {
	log, err := zap.NewProduction() // JSON on stderr
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	f := Files{CA: os.Getenv("ESCAPE_MTLS_CA"), Cert: os.Getenv("ESCAPE_MTLS_CERT"), Key: os.Getenv("ESCAPE_MTLS_KEY")}
	src, err := NewSource(f, WithLogger(log))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	s := grpc.NewServer(grpc.Creds(src.ServerCredentials(RolePlane)),
		grpc.UnaryInterceptor(UnaryServerInterceptor(src, nil)))
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(l) //nolint:errcheck // Stop ends it
	fmt.Printf("listening %s\n", l.Addr())
	io.Copy(io.Discard, os.Stdin) //nolint:errcheck // EOF or error: time to go
	s.Stop()
	log.Sync() //nolint:errcheck
	return 0
}

// TestServerInAnotherProcess: the agent's server runs in a process of its
// own; the plane, here, reaches it over loopback and verifies it, and a
// client of another CA is refused there: the refusal appears in the other
// process's log.
func TestServerInAnotherProcess(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	other := newTestCA(t, "other-ca")
	sf := writeIdentity(t, ca, agentH1, WithIPs(loopback))
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "ESCAPE_MTLS_CA="+sf.CA, "ESCAPE_MTLS_CERT="+sf.Cert, "ESCAPE_MTLS_KEY="+sf.Key)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		stdin.Close()
		return cmd.Wait()
	}
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill() //nolint:errcheck // a helper left behind by a failure
			stop()             //nolint:errcheck
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("helper said nothing: %v; stderr: %s", err, stderr.String())
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if !ok {
		t.Fatalf("helper said %q", line)
	}
	if pid := cmd.Process.Pid; pid == os.Getpid() {
		t.Fatal("the helper is this process")
	}

	plane := newObserved(t, writeIdentity(t, ca, thePlane))
	if _, err := healthCheck(dialGRPC(t, plane.Source, addr, agentH1)); err != nil {
		t.Fatalf("the plane's call to the other process: %v", err)
	}
	stranger := newObserved(t, writeIdentityIn(t, t.TempDir(), bundle(ca, other), other, thePlane))
	cc := dialGRPC(t, stranger.Source, addr, agentH1)
	_, err = healthCheck(cc)
	cc.Close() // no reconnection for the other process to refuse twice
	if err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Fatalf("a client of another CA: %v, want unknown certificate authority", err)
	}
	// The client saw the server's verdict and counts it too.
	if n := stranger.refusals(t, sideClient, ReasonUnknownCA); n != 1 {
		t.Errorf("the refused client counted %v unknown-ca refusals, want 1", n)
	}

	// Once the process has exited its log is complete.
	if err := stop(); err != nil {
		t.Fatalf("helper exit: %v; stderr: %s", err, stderr.String())
	}
	var refusals []map[string]any
	for _, l := range strings.Split(stderr.String(), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(l), &e) == nil && e["msg"] == "mtls: refused peer" {
			refusals = append(refusals, e)
		}
	}
	if len(refusals) != 1 || refusals[0]["reason"] != "unknown-ca" || refusals[0]["peer"] != "plane/plane" || refusals[0]["side"] != "server" {
		t.Fatalf("the helper logged refusals %v; stderr:\n%s", refusals, stderr.String())
	}
}
