package mtls

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
)

// MaxFileBytes bounds every certificate, key and CA file this package
// reads: a mix-up (a log file given as a key) fails fast instead of filling
// memory.
const MaxFileBytes = 1 << 20

// maxBlocks bounds how many PEM blocks one file may hold (a CA bundle of a
// few roots, a leaf with a couple of intermediates).
const maxBlocks = 64

// ParseCertificatePEM reads the certificates of a PEM file (a leaf then its
// intermediates, or a CA bundle), in file order. Text before and between
// blocks is ignored, as openssl writes it; anything else is an error: no
// certificate, a block of another type (a private key pasted into a
// certificate file), trailing bytes that are not PEM.
func ParseCertificatePEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		block, rest := pem.Decode(data)
		if block == nil {
			if len(bytes.TrimSpace(data)) > 0 && len(certs) == 0 {
				return nil, errors.New("no PEM data found")
			}
			if len(bytes.TrimSpace(data)) > 0 {
				return nil, fmt.Errorf("%d bytes after PEM block %d are not PEM", len(data), n-1)
			}
			break
		}
		if n > maxBlocks {
			return nil, fmt.Errorf("more than %d PEM blocks", maxBlocks)
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is a %q, want CERTIFICATE", n, block.Type)
		}
		if len(block.Headers) > 0 {
			return nil, fmt.Errorf("PEM block %d has headers, a certificate has none", n)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		certs = append(certs, c)
		data = rest
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate found")
	}
	return certs, nil
}

// ParseKeyPEM reads the one private key of a PEM file: PKCS#8
// ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY", cert-manager's default for
// ECDSA) or PKCS#1 ("RSA PRIVATE KEY"), of a type TLS 1.3 can sign with
// (ECDSA, RSA, Ed25519). CERTIFICATE blocks are skipped, so one file may
// hold both; encrypted keys are refused, a daemon has nobody to ask for
// the passphrase.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	var key crypto.Signer
	for n := 1; ; n++ {
		block, rest := pem.Decode(data)
		if block == nil {
			if len(bytes.TrimSpace(data)) > 0 && n == 1 {
				return nil, errors.New("no PEM data found")
			}
			if len(bytes.TrimSpace(data)) > 0 {
				return nil, fmt.Errorf("%d bytes after PEM block %d are not PEM", len(data), n-1)
			}
			break
		}
		if n > maxBlocks {
			return nil, fmt.Errorf("more than %d PEM blocks", maxBlocks)
		}
		data = rest
		if block.Type == "CERTIFICATE" {
			continue
		}
		if block.Type == "ENCRYPTED PRIVATE KEY" || block.Headers["Proc-Type"] != "" {
			return nil, fmt.Errorf("PEM block %d is an encrypted key: not supported, store the key unencrypted with mode 0600", n)
		}
		if key != nil {
			return nil, fmt.Errorf("PEM block %d is a second private key, want one", n)
		}
		k, err := parseKeyBlock(block)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		key = k
	}
	if key == nil {
		return nil, errors.New("no private key found")
	}
	return key, nil
}

func parseKeyBlock(b *pem.Block) (crypto.Signer, error) {
	var k any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("a %q, want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Type, err)
	}
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("%s holds a %T, which cannot sign a TLS handshake", b.Type, k)
	}
}

// readBounded reads a whole file of at most MaxFileBytes.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes, not a certificate or key file", path, MaxFileBytes)
	}
	return data, nil
}

// samePublicKey reports whether key is the private half of cert's key.
func samePublicKey(cert *x509.Certificate, key crypto.Signer) bool {
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(key.Public())
}

// encodeKey is the PKCS#8 PEM form of key, the form this package writes.
func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
