package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TestGRPCMutualTLS: the plane and another agent reach agent h1 over TLS
// 1.3, each side sees the other's identity, and nothing is refused.
func TestGRPCMutualTLS(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	server := newObserved(t, writeIdentity(t, ca, agentH1, WithIPs(loopback)))
	gs := startGRPC(t, server.Source, nil, RolePlane, RoleAgent)

	for _, id := range []Identity{thePlane, agentH2} {
		client := newObserved(t, writeIdentity(t, ca, id))
		cc := dialGRPC(t, client.Source, gs.addr, agentH1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var p peer.Peer
		_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
		cancel()
		if err != nil {
			t.Fatalf("%s calls agent/h1: %v", id, err)
		}
		st := p.AuthInfo.(credentials.TLSInfo).State
		if st.Version != tls.VersionTLS13 {
			t.Errorf("%s: TLS version %x, want 1.3", id, st.Version)
		}
		if got, _ := IdentityOf(st.PeerCertificates[0]); got != agentH1 {
			t.Errorf("%s sees the server as %s, want agent/h1", id, got)
		}
		if got := gs.seen.Load(); got == nil || *got != id {
			t.Errorf("server saw caller %v, want %s", got, id)
		}
		if n := client.totalRefusals(t, sideClient) + client.totalRefusals(t, sideServer); n != 0 {
			t.Errorf("%s counted %v refusals", id, n)
		}
	}
	if n := server.totalRefusals(t, sideServer); n != 0 {
		t.Errorf("server counted %v refusals", n)
	}
}

// TestGRPCStreamsAreChecked: a stream (Health/Watch) passes both stream
// interceptors and carries the caller's identity.
func TestGRPCStreamsAreChecked(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	server := newObserved(t, writeIdentity(t, ca, agentH1))
	gs := startGRPC(t, server.Source, nil, RolePlane)
	client := newObserved(t, writeIdentity(t, ca, thePlane))
	cc := dialGRPC(t, client.Source, gs.addr, agentH1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := w.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("watch says %s", resp.Status)
	}
	if got := gs.seen.Load(); got == nil || *got != thePlane {
		t.Errorf("server saw stream caller %v, want plane/plane", got)
	}
}

// TestGRPCAuthorizeRefuses: an authorizer's no is PermissionDenied naming
// the caller, the method and why.
func TestGRPCAuthorizeRefuses(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	server := newObserved(t, writeIdentity(t, ca, agentH1))
	onlyPlane := func(_ context.Context, _ string, id Identity) error {
		if id.Role != RolePlane {
			return errors.New("only the plane may check health")
		}
		return nil
	}
	gs := startGRPC(t, server.Source, onlyPlane, RolePlane, RoleAgent)
	client := newObserved(t, writeIdentity(t, ca, agentH2))
	_, err := healthCheck(dialGRPC(t, client.Source, gs.addr, agentH1))
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("agent h2's call: %v, want PermissionDenied", err)
	}
	mustContain(t, "error", err.Error(), "agent/h2 may not call /grpc.health.v1.Health/Check", "only the plane")
	if server.logs.FilterMessage("mtls: call refused").Len() != 1 {
		t.Error("the refused call was not logged")
	}
	plane := newObserved(t, writeIdentity(t, ca, thePlane))
	if _, err := healthCheck(dialGRPC(t, plane.Source, gs.addr, agentH1)); err != nil {
		t.Errorf("the plane's call: %v", err)
	}
}

// TestGRPCServerRefusals provokes, for real, each reason the agent's
// server refuses a client for, and checks what the client is told and what
// the server counts and logs.
func TestGRPCServerRefusals(t *testing.T) {
	caA := newTestCA(t, "escape-ca")
	caB := newTestCA(t, "other-ca")
	cases := []struct {
		name string
		// creds are a gRPC client's; raw, if set instead, a bare TLS
		// client's.
		creds        func(t *testing.T) credentials.TransportCredentials
		raw          func(t *testing.T) *tls.Config
		reason       Reason
		peer         string   // the identity the server's log names, if any
		clientSays   []string // in the client's error
		clientReason Reason   // Classify of the client's error
	}{{
		name: "unknown-ca",
		creds: func(t *testing.T) credentials.TransportCredentials {
			// The client's own CA file must hold B for its certificate to
			// load; the server's holds only A.
			f := writeIdentityIn(t, t.TempDir(), bundle(caA, caB), caB, thePlane)
			return newObserved(t, f).ClientCredentials(agentH1)
		},
		reason: ReasonUnknownCA, peer: "plane/plane",
		clientSays: []string{"remote error: tls: unknown certificate authority"}, clientReason: ReasonUnknownCA,
	}, {
		name: "expired",
		creds: func(t *testing.T) credentials.TransportCredentials {
			return newObserved(t, writeIdentity(t, caA, thePlane, validFor(-2*time.Hour, -time.Hour))).ClientCredentials(agentH1)
		},
		reason: ReasonExpired, peer: "plane/plane",
		clientSays: []string{"remote error: tls: expired certificate"}, clientReason: ReasonExpired,
	}, {
		// TLS has one alert for both ends of the window: the client hears
		// "expired", the server's log and metric say which.
		name: "not-yet-valid",
		creds: func(t *testing.T) credentials.TransportCredentials {
			return newObserved(t, writeIdentity(t, caA, thePlane, validFor(time.Hour, 2*time.Hour))).ClientCredentials(agentH1)
		},
		reason: ReasonNotYetValid, peer: "plane/plane",
		clientSays: []string{"remote error: tls: expired certificate"}, clientReason: ReasonExpired,
	}, {
		name: "role",
		creds: func(t *testing.T) credentials.TransportCredentials {
			return newObserved(t, writeIdentity(t, caA, alice)).ClientCredentials(agentH1)
		},
		reason: ReasonRole, peer: "operator/alice",
		clientSays: []string{"remote error: tls: bad certificate"}, clientReason: ReasonOther,
	}, {
		// A client of no ESCAPE make: crypto/tls itself, reading after its
		// handshake to hear the server's verdict.
		name: "no-certificate",
		raw: func(t *testing.T) *tls.Config {
			pool := x509.NewCertPool()
			pool.AddCert(caA.Certificate())
			return &tls.Config{RootCAs: pool, ServerName: "h1", MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}
		},
		reason:     ReasonNoCertificate,
		clientSays: []string{"remote error: tls: certificate required"}, clientReason: ReasonNoCertificate,
	}, {
		name: "tls-1.2",
		raw: func(t *testing.T) *tls.Config {
			pool := x509.NewCertPool()
			pool.AddCert(caA.Certificate())
			return &tls.Config{RootCAs: pool, ServerName: "h1", MaxVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
		},
		reason:     ReasonOther,
		clientSays: []string{"protocol version not supported"}, clientReason: ReasonOther,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			server := newObserved(t, writeIdentity(t, caA, agentH1))
			gs := startGRPC(t, server.Source, nil, RolePlane, RoleAgent)
			var err error
			if tc.raw != nil {
				err = rawTLSCall(t, gs.addr, tc.raw(t))
			} else {
				var cc *grpc.ClientConn
				if cc, err = grpc.NewClient("passthrough:///"+gs.addr, grpc.WithTransportCredentials(tc.creds(t))); err != nil {
					t.Fatal(err)
				}
				_, err = healthCheck(cc)
				cc.Close() // no reconnection to count twice
			}
			if err == nil {
				t.Fatal("the call succeeded")
			}
			mustContain(t, "client error", err.Error(), tc.clientSays...)
			if got := Classify(err); got != tc.clientReason {
				t.Errorf("Classify(client error) = %s, want %s", got, tc.clientReason)
			}
			assertRefused(t, server, sideServer, tc.reason, tc.peer)
		})
	}
}

// rawTLSCall handshakes with cfg and reads, which is where a TLS 1.3
// client hears that the server refused its certificate.
func rawTLSCall(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, err := c.Read(make([]byte, 512)); err != nil {
			return err
		}
	}
}

// assertRefused: o counted exactly one refusal on side, for reason, and
// logged one line naming the remote address and the peer.
func assertRefused(t *testing.T, o *observed, side string, reason Reason, peerID string) {
	t.Helper()
	eventually(t, "the refusal to be counted", func() bool { return o.refusals(t, side, reason) >= 1 })
	line := o.refusalLog(t, side, reason)
	if n := o.totalRefusals(t, side); n != 1 {
		t.Errorf("%v %s-side refusals counted, want 1", n, side)
	}
	remote, _ := line["remote"].(string)
	if _, _, err := net.SplitHostPort(remote); err != nil {
		t.Errorf("log line names remote %q: %v", remote, err)
	}
	if line["error"] == nil {
		t.Error("log line has no error")
	}
	if peerID != "" {
		if line["peer"] != peerID {
			t.Errorf("log line names peer %v, want %s", line["peer"], peerID)
		}
		if _, ok := line["peer_not_after"]; !ok {
			t.Error("log line has no peer_not_after")
		}
	}
}

// TestGRPCPlaintextClient: a client speaking HTTP/1.1 in the clear to the
// gRPC port gets nothing back, and the server counts "plaintext".
func TestGRPCPlaintextClient(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	server := newObserved(t, writeIdentity(t, ca, agentH1))
	gs := startGRPC(t, server.Source, nil, RolePlane)
	c, err := net.Dial("tcp", gs.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: h1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 512))
	var ne net.Error
	if n != 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("plaintext client read %d bytes, %v: want the connection closed", n, err)
	}
	assertRefused(t, server, sideServer, ReasonPlaintext, "")
}

// TestGRPCClientRefusals: the plane refuses an agent whose certificate is
// not what it dialed, and says why.
func TestGRPCClientRefusals(t *testing.T) {
	caA := newTestCA(t, "escape-ca")
	caB := newTestCA(t, "other-ca")
	cases := []struct {
		name       string
		server     func(t *testing.T) Files
		reason     Reason
		peer       string
		clientSays []string
	}{{
		name:       "unknown-ca",
		server:     func(t *testing.T) Files { return writeIdentityIn(t, t.TempDir(), bundle(caA, caB), caB, agentH1) },
		reason:     ReasonUnknownCA,
		peer:       "agent/h1",
		clientSays: []string{"certificate signed by unknown authority"},
	}, {
		name:       "expired",
		server:     func(t *testing.T) Files { return writeIdentity(t, caA, agentH1, validFor(-2*time.Hour, -time.Hour)) },
		reason:     ReasonExpired,
		peer:       "agent/h1",
		clientSays: []string{"certificate has expired or is not yet valid", "is after"},
	}, {
		name:       "not-yet-valid",
		server:     func(t *testing.T) Files { return writeIdentity(t, caA, agentH1, validFor(time.Hour, 2*time.Hour)) },
		reason:     ReasonNotYetValid,
		peer:       "agent/h1",
		clientSays: []string{"is before"},
	}, {
		name:       "agent-h2-dialed-as-h1",
		server:     func(t *testing.T) Files { return writeIdentity(t, caA, agentH2, WithIPs(loopback)) },
		reason:     ReasonNameMismatch,
		peer:       "agent/h2",
		clientSays: []string{"certificate is valid for h2, not h1"},
	}, {
		// The host name matches, the identity does not.
		name:       "plane-named-h1",
		server:     func(t *testing.T) Files { return writeIdentity(t, caA, Identity{RolePlane, "h1"}, WithDNSNames("h1")) },
		reason:     ReasonNameMismatch,
		peer:       "plane/h1",
		clientSays: []string{"the server is plane/h1, expected agent/h1"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			server := newObserved(t, tc.server(t))
			gs := startGRPC(t, server.Source, nil, RolePlane)
			client := newObserved(t, writeIdentity(t, caA, thePlane))
			cc := dialGRPC(t, client.Source, gs.addr, agentH1)
			_, err := healthCheck(cc)
			cc.Close()
			if err == nil {
				t.Fatal("the call succeeded")
			}
			mustContain(t, "client error", err.Error(), tc.clientSays...)
			if status.Code(err) != codes.Unavailable {
				t.Errorf("code %s, want Unavailable", status.Code(err))
			}
			assertRefused(t, client, sideClient, tc.reason, tc.peer)
			// The server hears only that it was refused.
			eventually(t, "the server to log the client's refusal", func() bool {
				return server.logs.FilterMessage("mtls: peer refused the handshake").Len() > 0
			})
		})
	}
}

// TestClientConfigRefusesBadExpectation: a client told to expect garbage
// connects to nobody, and says why.
func TestClientConfigRefusesBadExpectation(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	server := newObserved(t, writeIdentity(t, ca, agentH1))
	gs := startGRPC(t, server.Source, nil, RolePlane)
	client := newObserved(t, writeIdentity(t, ca, thePlane))
	_, err := healthCheck(dialGRPC(t, client.Source, gs.addr, Identity{Role: "root", Name: "h1"}))
	if err == nil || !strings.Contains(err.Error(), `unknown role`) || !strings.Contains(err.Error(), "root/h1") {
		t.Fatalf("call expecting root/h1: %v", err)
	}
}
