package mtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func parseOne(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	certs, err := ParseCertificatePEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

// TestIssueAgent: an agent's certificate carries its identity as a URI
// SAN, its host name as a DNS SAN, its listen addresses as IP SANs, serves
// and is served, and verifies under its CA with standard host name
// verification.
func TestIssueAgent(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	certPEM, keyPEM, err := ca.Issue(agentH1, WithIPs(netip.MustParseAddr("198.18.0.11")), WithDNSNames("h1.lab", "h1"))
	if err != nil {
		t.Fatal(err)
	}
	c := parseOne(t, certPEM)
	if id, err := IdentityOf(c); err != nil || id != agentH1 {
		t.Errorf("identity %v, %v", id, err)
	}
	if !slices.Equal(c.DNSNames, []string{"h1", "h1.lab"}) {
		t.Errorf("DNS SANs %v, want h1 first and once", c.DNSNames)
	}
	if len(c.IPAddresses) != 1 || c.IPAddresses[0].String() != "198.18.0.11" {
		t.Errorf("IP SANs %v", c.IPAddresses)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ext key usage %v", c.ExtKeyUsage)
	}
	if c.IsCA {
		t.Error("a leaf is a CA")
	}
	pk, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pk.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", c.PublicKey)
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil || !samePublicKey(c, key) {
		t.Errorf("the key is not the certificate's: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Certificate())
	for _, name := range []string{"h1", "198.18.0.11"} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("verify as %s: %v", name, err)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: "h2"}); err == nil {
		t.Error("h1's certificate verifies as h2")
	}
}

// TestIssueOperator: an operator's certificate is for clients only and
// names no host.
func TestIssueOperator(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	certPEM, _, err := ca.Issue(alice)
	if err != nil {
		t.Fatal(err)
	}
	c := parseOne(t, certPEM)
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ext key usage %v, want client only", c.ExtKeyUsage)
	}
	if len(c.DNSNames)+len(c.IPAddresses) != 0 {
		t.Errorf("operator names hosts: %v %v", c.DNSNames, c.IPAddresses)
	}
	if _, _, err := ca.Issue(alice, WithDNSNames("alice")); err == nil || !strings.Contains(err.Error(), "operator certificate carries no DNS") {
		t.Errorf("operator with a DNS name: %v", err)
	}
}

// TestIssueValidity: WithValidity sets the window exactly, in the past or
// the future; the default is a year from a minute ago by the CA's clock;
// no certificate outlives its CA.
func TestIssueValidity(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	from, to := time.Now().Add(-2*time.Hour).Truncate(time.Second), time.Now().Add(-time.Hour).Truncate(time.Second)
	certPEM, _, err := ca.Issue(thePlane, WithValidity(from, to))
	if err != nil {
		t.Fatal(err)
	}
	if c := parseOne(t, certPEM); !c.NotBefore.Equal(from) || !c.NotAfter.Equal(to) {
		t.Errorf("window %s..%s, want %s..%s", c.NotBefore, c.NotAfter, from, to)
	}
	clock := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	caAt, err := NewCA("escape-ca", 5*365*24*time.Hour, WithClock(func() time.Time { return clock }))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err = caAt.Issue(thePlane)
	if err != nil {
		t.Fatal(err)
	}
	if c := parseOne(t, certPEM); !c.NotBefore.Equal(clock.Add(-time.Minute)) || !c.NotAfter.Equal(clock.Add(DefaultValidity)) {
		t.Errorf("default window %s..%s", c.NotBefore, c.NotAfter)
	}
	later := func() time.Time { return clock.Add(time.Hour) }
	if certPEM, _, err = caAt.Issue(thePlane, WithClock(later)); err != nil || !parseOne(t, certPEM).NotAfter.Equal(later().Add(DefaultValidity)) {
		t.Errorf("Issue WithClock: %v", err)
	}
	for what, opt := range map[string]IssueOption{
		"outlive its CA":  WithValidity(clock, clock.Add(10*365*24*time.Hour)),
		"before its CA":   WithValidity(clock.Add(-24*time.Hour), clock),
		"before it start": WithValidity(clock, clock.Add(-time.Second)),
	} {
		if _, _, err := caAt.Issue(thePlane, opt); err == nil || !strings.Contains(err.Error(), what) {
			t.Errorf("window that would %s: %v", what, err)
		}
	}
}

func TestIssueRefusesGarbage(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	cases := []struct {
		id   Identity
		opts []IssueOption
		says string
	}{
		{Identity{"root", "h1"}, nil, "unknown role"},
		{Identity{RoleAgent, "H 1"}, nil, "bad name"},
		{agentH1, []IssueOption{WithDNSNames("*.lab")}, "bad DNS name"},
		{agentH1, []IssueOption{WithDNSNames("h1..lab")}, "bad DNS name"},
		{agentH1, []IssueOption{WithDNSNames("-h1")}, "bad DNS name"},
		{agentH1, []IssueOption{WithIPs(netip.Addr{})}, "bad IP SAN"},
		{agentH1, []IssueOption{WithIPs(netip.MustParseAddr("0.0.0.0"))}, "bad IP SAN"},
	}
	for _, tc := range cases {
		if _, _, err := ca.Issue(tc.id, tc.opts...); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Issue(%v): %v, want an error saying %q", tc.id, err, tc.says)
		}
	}
	if _, err := NewCA("Escape CA", time.Hour); err == nil || !strings.Contains(err.Error(), "bad name") {
		t.Errorf("NewCA with a bad name: %v", err)
	}
	if _, err := NewCA("escape-ca", time.Second); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Errorf("NewCA valid for a second: %v", err)
	}
}

func TestLoadCA(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	dir := t.TempDir()
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir+"/ca.crt", ca.CertPEM())
	writeFile(t, dir+"/ca.key", keyPEM)
	loaded, err := LoadCA(dir+"/ca.crt", dir+"/ca.key")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := loaded.Issue(agentH1)
	if err != nil {
		t.Fatal(err)
	}
	if err := parseOne(t, certPEM).CheckSignatureFrom(ca.Certificate()); err != nil {
		t.Errorf("the loaded CA signs as another: %v", err)
	}

	other := newTestCA(t, "other-ca")
	otherKey, _ := other.KeyPEM()
	leafPEM, leafKey, _ := ca.Issue(agentH1)
	for what, files := range map[string][2][]byte{
		"is not the key of certificate": {ca.CertPEM(), otherKey},
		"is not a CA certificate":       {leafPEM, leafKey},
		"holds 2 certificates":          {bundle(ca, other), keyPEM},
		"no PEM data found":             {[]byte("hello"), keyPEM},
	} {
		writeFile(t, dir+"/bad.crt", files[0])
		writeFile(t, dir+"/bad.key", files[1])
		if _, err := LoadCA(dir+"/bad.crt", dir+"/bad.key"); err == nil || !strings.Contains(err.Error(), what) {
			t.Errorf("LoadCA: %v, want an error saying %q", err, what)
		}
	}
	if _, err := LoadCA(dir+"/absent.crt", dir+"/ca.key"); err == nil || !strings.Contains(err.Error(), "absent.crt") {
		t.Errorf("LoadCA of a missing file: %v", err)
	}
}
