package mtls

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// shortLived is a validity window ending about three seconds from now.
// (x509 keeps whole seconds, so the real window may be a little shorter.)
func shortLived() (IssueOption, time.Time) {
	now := time.Now()
	end := now.Add(3 * time.Second)
	return WithValidity(now.Add(-time.Minute), end), end.Truncate(time.Second)
}

// sleepPast waits until t has passed by a margin on the wall clock.
func sleepPast(t time.Time) { time.Sleep(time.Until(t.Add(1200 * time.Millisecond))) }

// TestExpiryMidRunRefusesClient: the plane's certificate expires while
// its connection to the agent stays up. The call before succeeds; the call
// after, on the same connection, is refused by the server's interceptor
// with a message saying whose certificate expired when, counted and logged.
func TestExpiryMidRunRefusesClient(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "escape-ca")
	server := newObserved(t, writeIdentity(t, ca, agentH1))
	gs := startGRPC(t, server.Source, nil, RolePlane)
	validity, end := shortLived()
	client := newObserved(t, writeIdentity(t, ca, thePlane, validity))
	cc := dialGRPC(t, client.Source, gs.addr, agentH1)
	if _, err := healthCheck(cc); err != nil {
		t.Fatalf("call while the certificate is valid: %v", err)
	}
	sleepPast(end)
	_, err := healthCheck(cc)
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("call after expiry: %v, want Unauthenticated", err)
	}
	mustContain(t, "error", err.Error(), "expired:", "certificate of plane/plane expired at")
	// A stream opened now is refused as well.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("stream after expiry: %v, want Unauthenticated", err)
	}
	if n := gs.conns.n.Load(); n != 1 {
		t.Fatalf("the server accepted %d connections, want 1: the calls did not share a connection", n)
	}
	if n := server.refusals(t, sideServer, ReasonExpired); n != 2 {
		t.Errorf("%v expired refusals counted, want 2 (the call and the stream)", n)
	}
	lines := server.logs.FilterMessage("mtls: refused peer").All()
	if len(lines) != 2 || lines[0].ContextMap()["peer"] != "plane/plane" || lines[0].ContextMap()["reason"] != "expired" {
		t.Errorf("refusal log lines: %v", lines)
	}
}

// TestExpiryMidRunRefusesServer: the agent's certificate expires while the
// plane's connection to it stays up; the plane's interceptor stops
// trusting the answers.
func TestExpiryMidRunRefusesServer(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "escape-ca")
	validity, end := shortLived()
	server := newObserved(t, writeIdentity(t, ca, agentH1, validity))
	gs := startGRPC(t, server.Source, nil, RolePlane)
	client := newObserved(t, writeIdentity(t, ca, thePlane))
	cc := dialGRPC(t, client.Source, gs.addr, agentH1)
	if _, err := healthCheck(cc); err != nil {
		t.Fatalf("call while the certificate is valid: %v", err)
	}
	sleepPast(end)
	_, err := healthCheck(cc)
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("call after expiry: %v, want Unauthenticated", err)
	}
	mustContain(t, "error", err.Error(), "no longer trusted", "certificate of agent/h1 expired at")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("stream after expiry: %v, want Unauthenticated", err)
	}
	if n := gs.conns.n.Load(); n != 1 {
		t.Fatalf("the server accepted %d connections, want 1", n)
	}
	if n := client.refusals(t, sideClient, ReasonExpired); n != 2 {
		t.Errorf("%v expired refusals counted by the client, want 2", n)
	}
}
