package mtls

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

func TestNewSourceLoads(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	end := time.Now().Add(100 * time.Hour).Truncate(time.Second)
	src := newObserved(t, writeIdentity(t, ca, agentH1, WithValidity(time.Now().Add(-time.Minute), end)))
	if src.Identity() != agentH1 || !src.NotAfter().Equal(end) {
		t.Fatalf("loaded %s until %s", src.Identity(), src.NotAfter())
	}
	if src.logs.FilterMessage("mtls: loaded certificate").Len() != 1 {
		t.Error("the load was not logged")
	}
	if src.logs.FilterLevelExact(zapcore.WarnLevel).Len() != 0 {
		t.Errorf("warnings for a valid certificate: %v", src.logs.All())
	}
}

// TestNewSourceHoldsExpiredCertificate: an expired own certificate loads
// (the process can still start, and its peers say why they refuse it),
// with a warning.
func TestNewSourceHoldsExpiredCertificate(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	src := newObserved(t, writeIdentity(t, ca, agentH1, validFor(-2*time.Hour, -time.Hour)))
	w := src.logs.FilterMessage("mtls: own certificate is not valid now; peers will refuse it").All()
	if len(w) != 1 || !strings.Contains(w[0].ContextMap()["error"].(string), "expired at") {
		t.Errorf("warning lines: %v", w)
	}
}

// TestNewSourceRefusesGarbage: each way the three files can be wrong is
// refused with an error naming the file and the fault.
func TestNewSourceRefusesGarbage(t *testing.T) {
	ca := newTestCA(t, "escape-ca")
	other := newTestCA(t, "other-ca")
	good := writeIdentity(t, ca, agentH1)
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	otherCert, otherKey, _ := other.Issue(agentH1)
	_, strayKey, _ := ca.Issue(agentH1)
	noID := issueRaw(t, ca, nil)
	cases := []struct {
		name          string
		ca, cert, key []byte
		says          string
	}{
		{"key of another certificate", nil, nil, strayKey, "is not the key of certificate"},
		{"certificate of another CA", nil, otherCert, otherKey, "does not chain to CA file"},
		{"certificate without identity", nil, noID.cert, noID.key, "carries no escape.mtd identity"},
		{"CA file holding a leaf", read(good.Cert), nil, nil, "is not a CA certificate"},
		{"key in the certificate file", nil, read(good.Key), nil, `is a "PRIVATE KEY", want CERTIFICATE`},
		{"certificate in the key file", nil, nil, read(good.Cert), "no private key found"},
		{"empty CA file", []byte{}, nil, nil, "no certificate found"},
		{"truncated certificate", nil, read(good.Cert)[:200], nil, "no PEM data found"},
		{"huge key file", nil, nil, bytes.Repeat([]byte("A"), MaxFileBytes+1), "larger than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			f := IssuedFiles(dir, "h1")
			pick := func(b []byte, from string) []byte {
				if b != nil {
					return b
				}
				return read(from)
			}
			writeFile(t, f.CA, pick(tc.ca, good.CA))
			writeFile(t, f.Cert, pick(tc.cert, good.Cert))
			writeFile(t, f.Key, pick(tc.key, good.Key))
			_, err := NewSource(f)
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("NewSource: %v, want an error saying %q", err, tc.says)
			}
			if !strings.Contains(err.Error(), dir) {
				t.Errorf("error %q names no file", err)
			}
		})
	}
	if _, err := NewSource(Files{CA: "ca.crt", Cert: good.Cert}); err == nil ||
		!strings.Contains(err.Error(), `tls ca: path "ca.crt" is not absolute`) || !strings.Contains(err.Error(), "tls key: no path given") {
		t.Errorf("relative and missing paths: %v", err)
	}
	missing := good
	missing.Key = filepath.Join(t.TempDir(), "absent.key")
	if _, err := NewSource(missing); err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "absent.key") {
		t.Errorf("missing key: %v", err)
	}
}

type rawCert struct{ cert, key []byte }

// issueRaw signs, with ca's key, a certificate carrying exactly uris.
func issueRaw(t *testing.T, ca *CA, uris []*url.URL) rawCert {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "h1"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"h1"}, URIs: uris,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := encodeKey(key)
	return rawCert{encodeCert(der), keyPEM}
}

// TestCertManagerSecretLayout: what cert-manager writes for an issuer
// with an intermediate loads and serves: tls.crt holds the leaf then the
// intermediate, tls.key a SEC 1 "EC PRIVATE KEY", ca.crt the root. The
// client verifies the chain through the intermediate the server sends.
func TestCertManagerSecretLayout(t *testing.T) {
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, MaxPathLenZero: true,
	}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, root, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(interDER)
	issuer := &CA{cert: inter, certPEM: encodeCert(interDER), key: interKey, now: time.Now}

	secret := func(id Identity) Files {
		certPEM, _, err := issuer.Issue(id, validFor(-time.Minute, time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		// Re-issue with a SEC 1 key, as cert-manager writes ECDSA keys.
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		c := parseOne(t, certPEM)
		der, err := x509.CreateCertificate(rand.Reader, c, inter, key.Public(), interKey)
		if err != nil {
			t.Fatal(err)
		}
		sec1, _ := x509.MarshalECPrivateKey(key)
		dir := t.TempDir()
		f := SecretFiles(dir)
		writeFile(t, f.CA, encodeCert(rootDER))
		writeFile(t, f.Cert, append(encodeCert(der), encodeCert(interDER)...))
		writeFile(t, f.Key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}))
		return f
	}
	server := newObserved(t, secret(agentH1))
	gs := startGRPC(t, server.Source, nil, RolePlane)
	client := newObserved(t, secret(thePlane))
	if _, err := healthCheck(dialGRPC(t, client.Source, gs.addr, agentH1)); err != nil {
		t.Fatalf("call through an intermediate: %v", err)
	}
	if got := gs.seen.Load(); got == nil || *got != thePlane {
		t.Errorf("server saw %v", got)
	}
}

func TestClassifyOwnErrors(t *testing.T) {
	if r := Classify(nil); r != "" {
		t.Errorf("Classify(nil) = %q", r)
	}
	wrapped := errors.Join(errors.New("context"), refusal(ReasonRole, nil, "operator/x may not"))
	if r := Classify(wrapped); r != ReasonRole {
		t.Errorf("Classify(wrapped refusal) = %q", r)
	}
	if r := Classify(errors.New("connection reset by peer")); r != ReasonOther {
		t.Errorf("Classify(reset) = %q", r)
	}
	// The text a gRPC status keeps of a server's alert.
	if r := Classify(errors.New(`rpc error: code = Unavailable desc = connection error: desc = "transport: authentication handshake failed: mtls: the server refused this client's certificate: remote error: tls: expired certificate"`)); r != ReasonExpired {
		t.Errorf("Classify(remote expired) = %q", r)
	}
}
