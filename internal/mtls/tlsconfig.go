package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
)

// ServerConfig is a TLS 1.3 server configuration that presents the own
// certificate, requires a client certificate verified against the CA pool
// in use at each handshake, and accepts only clients whose identity has
// one of the allowed roles (none allowed: every client is refused).
//
// The material is picked per handshake (GetConfigForClient), so a reload
// takes effect for the next connection without touching live ones. Session
// tickets are off: a resumed session would skip the check against the CA
// pool in use, and gRPC's long-lived connections gain nothing from them.
// NextProtos set on the returned Config are honoured.
//
// Refusals are counted and logged only through ServerCredentials and
// Listener, which see the handshake's error.
func (s *Source) ServerConfig(allow ...Role) *tls.Config {
	allowed := slices.Clone(allow)
	outer := &tls.Config{MinVersion: tls.VersionTLS13}
	outer.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		m := s.current()
		return &tls.Config{
			MinVersion:             tls.VersionTLS13,
			Certificates:           []tls.Certificate{m.cert},
			ClientAuth:             tls.RequireAndVerifyClientCert,
			ClientCAs:              m.pool,
			Time:                   s.now,
			SessionTicketsDisabled: true,
			NextProtos:             outer.NextProtos,
			VerifyConnection: func(cs tls.ConnectionState) error {
				return checkClientRole(cs, allowed)
			},
		}, nil
	}
	return outer
}

func checkClientRole(cs tls.ConnectionState, allowed []Role) error {
	if len(cs.PeerCertificates) == 0 {
		return refusal(ReasonNoCertificate, nil, "the client presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	id, err := IdentityOf(leaf)
	if err != nil {
		return &RefusalError{Reason: ReasonOther, Peer: leaf, Err: err}
	}
	if !slices.Contains(allowed, id.Role) {
		return refusal(ReasonRole, leaf, "%s may not connect here: this listener accepts %s", id, roleList(allowed))
	}
	return nil
}

func roleList(rs []Role) string {
	if len(rs) == 0 {
		return "no role"
	}
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return "role " + strings.Join(s, ", ")
}

// ClientConfig is a TLS 1.3 client configuration that presents the own
// certificate and accepts only the server expect: its certificate must
// chain to the CA pool in use at the handshake, allow server use, name
// expect.Name as a DNS SAN when expect is an agent (so dialing
// 198.18.0.11:7443 for agent h1 checks "h1"), and carry exactly expect's
// identity.
//
// crypto/tls's own server verification is switched off because it would
// pin the CA pool of the moment this Config was made; VerifyConnection does
// the same verification against the current pool instead.
func (s *Source) ClientConfig(expect Identity) *tls.Config {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified in VerifyConnection, see above
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &s.current().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error { return s.verifyServer(expect, cs) },
	}
	if expect.Role == RoleAgent {
		cfg.ServerName = expect.Name
	}
	return cfg
}

func (s *Source) verifyServer(expect Identity, cs tls.ConnectionState) error {
	if err := expect.Validate(); err != nil {
		return refusal(ReasonOther, nil, "refusing to connect: the expected server: %w", err)
	}
	if len(cs.PeerCertificates) == 0 {
		return refusal(ReasonNoCertificate, nil, "the server presented no certificate")
	}
	m := s.current()
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{
		Roots:         m.pool,
		Intermediates: inter,
		CurrentTime:   s.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if expect.Role == RoleAgent {
		opts.DNSName = expect.Name
	}
	if _, err := leaf.Verify(opts); err != nil {
		return &RefusalError{Reason: Classify(err), Peer: leaf,
			Err: fmt.Errorf("server certificate of %s, expected %s: %w", describe(leaf), expect, err)}
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return &RefusalError{Reason: ReasonOther, Peer: leaf, Err: fmt.Errorf("server: %w", err)}
	}
	if id != expect {
		return refusal(ReasonNameMismatch, leaf, "the server is %s, expected %s", id, expect)
	}
	return nil
}
