package mtls

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

// FuzzParseIdentity: never panics; whatever it accepts is valid and
// prints back as exactly the URI it was read from.
func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{
		"spiffe://escape.mtd/agent/h1", "spiffe://escape.mtd/operator/ci_bot.2", "spiffe://escape.mtd/plane/",
		"spiffe://escape.mtd//h1", "spiffe://escape.mtd/agent/h1/x", "spiffe://x@escape.mtd/agent/h1", "spiffe://",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		id, err := ParseIdentity(uri)
		if err != nil {
			if id != (Identity{}) {
				t.Fatalf("error %v with identity %v", err, id)
			}
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("accepted %q as invalid %v: %v", uri, id, err)
		}
		if id.URI() != uri {
			t.Fatalf("accepted %q, which prints back as %q", uri, id.URI())
		}
	})
}

func fuzzSeeds(f *testing.F) {
	ca, err := NewCA("escape-ca", 2*DefaultValidity)
	if err != nil {
		f.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(agentH1)
	if err != nil {
		f.Fatal(err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	rk, _ := rsa.GenerateKey(rand.Reader, 1024)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKCS8PrivateKey(ed)
	for _, s := range [][]byte{
		certPEM, keyPEM, ca.CertPEM(), append(certPEM, ca.CertPEM()...), append(certPEM, keyPEM...),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: edDER}),
		[]byte("text before\n" + string(certPEM) + "text after"), certPEM[:len(certPEM)/2], nil,
	} {
		f.Add(s)
	}
}

// FuzzParseCertificatePEM: never panics; what it accepts is at least one
// parsed certificate.
func FuzzParseCertificatePEM(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertificatePEM(data)
		if err != nil {
			if certs != nil {
				t.Fatalf("error %v with certificates", err)
			}
			return
		}
		if len(certs) == 0 || len(certs) > maxBlocks {
			t.Fatalf("accepted %d certificates", len(certs))
		}
		for _, c := range certs {
			if c == nil || len(c.Raw) == 0 {
				t.Fatal("accepted an empty certificate")
			}
			if !bytes.Contains(data, []byte("CERTIFICATE")) {
				t.Fatal("accepted a file without a CERTIFICATE block")
			}
		}
	})
}

// FuzzParseKeyPEM: never panics; what it accepts is one signing key.
func FuzzParseKeyPEM(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := ParseKeyPEM(data)
		if err != nil {
			if key != nil {
				t.Fatalf("error %v with a key", err)
			}
			return
		}
		if key == nil || key.Public() == nil {
			t.Fatal("accepted a nil key")
		}
		switch key.(type) {
		case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
		default:
			t.Fatalf("accepted a %T", key)
		}
	})
}
