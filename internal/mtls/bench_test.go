package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// benchSetup is an agent's server and the plane's client, over this
// package (mtls) or over static crypto/tls configurations of the same
// certificates with no interceptors (baseline).
func benchSetup(b *testing.B, mtls bool) (dial func() *grpc.ClientConn) {
	ca, err := NewCA("escape-ca", 2*DefaultValidity)
	if err != nil {
		b.Fatal(err)
	}
	sf := writeIdentityIn(b, b.TempDir(), ca.CertPEM(), ca, agentH1)
	cf := writeIdentityIn(b, b.TempDir(), ca.CertPEM(), ca, thePlane)
	server, err := NewSource(sf)
	if err != nil {
		b.Fatal(err)
	}
	client, err := NewSource(cf)
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Certificate())
	var sopts []grpc.ServerOption
	var copts []grpc.DialOption
	if mtls {
		sopts = []grpc.ServerOption{grpc.Creds(server.ServerCredentials(RolePlane)),
			grpc.UnaryInterceptor(UnaryServerInterceptor(server, func(context.Context, string, Identity) error { return nil }))}
		copts = []grpc.DialOption{grpc.WithTransportCredentials(client.ClientCredentials(agentH1)),
			grpc.WithUnaryInterceptor(UnaryClientInterceptor(client))}
	} else {
		sm, cm := server.cur.Load(), client.cur.Load()
		sopts = []grpc.ServerOption{grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13,
			Certificates: []tls.Certificate{sm.cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}))}
		copts = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13,
			Certificates: []tls.Certificate{cm.cert}, RootCAs: pool, ServerName: "h1"}))}
	}
	s := grpc.NewServer(sopts...)
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(l) //nolint:errcheck // Stop ends it
	b.Cleanup(s.Stop)
	return func() *grpc.ClientConn {
		cc, err := grpc.NewClient("passthrough:///"+l.Addr().String(), copts...)
		if err != nil {
			b.Fatal(err)
		}
		return cc
	}
}

// BenchmarkUnaryCall: one Health/Check on a connection already up; mtls
// adds the per-call validity checks and the authorizer.
//
//	go test ./internal/mtls -run '^$' -bench UnaryCall -count 10
func BenchmarkUnaryCall(b *testing.B) {
	for _, mode := range []struct {
		name string
		mtls bool
	}{{"baseline", false}, {"mtls", true}} {
		b.Run(mode.name, func(b *testing.B) {
			dial := benchSetup(b, mode.mtls)
			cc := dial()
			defer cc.Close()
			hc := healthpb.NewHealthClient(cc)
			ctx := context.Background()
			if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkConnect: a new connection (TCP, TLS 1.3 handshake both ways,
// HTTP/2 preface) and its first call; mtls adds the per-handshake config,
// its own server verification and the wait for the server's first record.
//
//	go test ./internal/mtls -run '^$' -bench Connect -count 10
func BenchmarkConnect(b *testing.B) {
	for _, mode := range []struct {
		name string
		mtls bool
	}{{"baseline", false}, {"mtls", true}} {
		b.Run(mode.name, func(b *testing.B) {
			dial := benchSetup(b, mode.mtls)
			ctx := context.Background()
			for b.Loop() {
				cc := dial()
				if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
					b.Fatal(err)
				}
				cc.Close()
			}
		})
	}
}
