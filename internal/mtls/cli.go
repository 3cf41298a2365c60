package mtls

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/escape-mtd/escape/internal/atomicfile"
)

// What `escape-plane certs` does; the command only parses flags.

// File modes: keys are read by their owner only.
const (
	keyMode  = 0o600
	certMode = 0o644
)

// InitCARequest is `escape-plane certs init`.
type InitCARequest struct {
	// Dir receives ca.crt and ca.key; made (0700) if missing.
	Dir      string
	Name     string        // the CA's common name
	Validity time.Duration // how long the CA is valid
	Force    bool          // replace an existing ca.key
	Now      func() time.Time
}

// InitCA makes a CA and writes Dir/ca.crt and Dir/ca.key, refusing to
// replace an existing key unless Force. It returns the paths written.
func InitCA(r InitCARequest) (certPath, keyPath string, err error) {
	if r.Dir == "" {
		return "", "", errors.New("certs init: no --dir given")
	}
	certPath, keyPath = filepath.Join(r.Dir, "ca.crt"), filepath.Join(r.Dir, "ca.key")
	if err := refuseExistingKey(keyPath, r.Force); err != nil {
		return "", "", fmt.Errorf("certs init: %w", err)
	}
	ca, err := NewCA(r.Name, r.Validity, WithClock(r.Now))
	if err != nil {
		return "", "", fmt.Errorf("certs init: %w", err)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return "", "", fmt.Errorf("certs init: %w", err)
	}
	if err := os.MkdirAll(r.Dir, 0o700); err != nil {
		return "", "", fmt.Errorf("certs init: %w", err)
	}
	// The certificate first: a run cut short leaves a certificate without
	// its key, which the next run replaces, never a key without its
	// certificate, which it would refuse to touch.
	if err := atomicfile.WriteFile(certPath, ca.CertPEM(), certMode); err != nil {
		return "", "", fmt.Errorf("certs init: %w", err)
	}
	if err := atomicfile.WriteFile(keyPath, keyPEM, keyMode); err != nil {
		return "", "", fmt.Errorf("certs init: %w", err)
	}
	return certPath, keyPath, nil
}

// IssueRequest is `escape-plane certs issue`; its fields are the flags as
// given, checked here.
type IssueRequest struct {
	CADir    string // holds ca.crt and ca.key (InitCA's Dir)
	OutDir   string // receives <name>.crt, <name>.key and ca.crt
	Role     string
	Name     string
	DNS      []string
	IPs      []string
	Validity time.Duration
	Force    bool // replace an existing <name>.key, or a ca.crt of another CA
	Now      func() time.Time
}

// IssueFiles issues a certificate as r asks and writes it, its key and a
// copy of the CA certificate to r.OutDir. It returns the files, ready for
// NewSource.
func IssueFiles(r IssueRequest) (Files, error) {
	role, err := ParseRole(r.Role)
	if err != nil {
		return Files{}, fmt.Errorf("certs issue: --role: %w", err)
	}
	id := Identity{Role: role, Name: r.Name}
	if err := id.Validate(); err != nil {
		return Files{}, fmt.Errorf("certs issue: --name: %w", err)
	}
	if r.Validity <= 0 {
		return Files{}, fmt.Errorf("certs issue: --validity %s: want a positive duration", r.Validity)
	}
	ips := make([]netip.Addr, 0, len(r.IPs))
	for _, s := range r.IPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return Files{}, fmt.Errorf("certs issue: --ip %q: not an IP address", s)
		}
		ips = append(ips, a)
	}
	if r.CADir == "" || r.OutDir == "" {
		return Files{}, errors.New("certs issue: --ca-dir and --out-dir are both needed")
	}
	now := r.Now
	if now == nil {
		now = time.Now
	}
	ca, err := LoadCA(filepath.Join(r.CADir, "ca.crt"), filepath.Join(r.CADir, "ca.key"), WithClock(now))
	if err != nil {
		return Files{}, fmt.Errorf("certs issue: %w", err)
	}
	out, err := filepath.Abs(r.OutDir)
	if err != nil {
		return Files{}, fmt.Errorf("certs issue: --out-dir: %w", err)
	}
	f := IssuedFiles(out, r.Name)
	if err := refuseExistingKey(f.Key, r.Force); err != nil {
		return Files{}, fmt.Errorf("certs issue: %w", err)
	}
	if old, err := os.ReadFile(f.CA); err == nil && !bytes.Equal(old, ca.CertPEM()) && !r.Force {
		return Files{}, fmt.Errorf("certs issue: %s holds another CA's certificate: refusing to replace it (--force replaces it)", f.CA)
	}
	t := now()
	certPEM, keyPEM, err := ca.Issue(id, WithDNSNames(r.DNS...), WithIPs(ips...), WithValidity(t.Add(-backdate), t.Add(r.Validity)))
	if err != nil {
		return Files{}, fmt.Errorf("certs issue: %w", err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return Files{}, fmt.Errorf("certs issue: %w", err)
	}
	for _, w := range []struct {
		path string
		data []byte
		mode fs.FileMode
	}{{f.CA, ca.CertPEM(), certMode}, {f.Cert, certPEM, certMode}, {f.Key, keyPEM, keyMode}} {
		if err := atomicfile.WriteFile(w.path, w.data, w.mode); err != nil {
			return Files{}, fmt.Errorf("certs issue: %w", err)
		}
	}
	return f, nil
}

func refuseExistingKey(path string, force bool) error {
	_, err := os.Lstat(path)
	switch {
	case err == nil && !force:
		return fmt.Errorf("%s exists: refusing to replace a key (--force replaces it)", path)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("check %s: %w", path, err)
	}
	return nil
}

// ShowCertificate prints what the certificates of the PEM file at path
// say: identity, names, usage, validity against now.
func ShowCertificate(w io.Writer, path string, now time.Time) error {
	data, err := readBounded(path)
	if err != nil {
		return fmt.Errorf("certs show: %w", err)
	}
	certs, err := ParseCertificatePEM(data)
	if err != nil {
		if _, kerr := ParseKeyPEM(data); kerr == nil {
			return fmt.Errorf("certs show: %s is a private key, not a certificate", path)
		}
		return fmt.Errorf("certs show: %s: %w", path, err)
	}
	var b strings.Builder
	for i, c := range certs {
		if len(certs) > 1 {
			fmt.Fprintf(&b, "certificate %d of %d\n", i+1, len(certs))
		}
		writeCert(&b, c, now)
	}
	_, err = io.WriteString(w, b.String())
	return err
}

func writeCert(b *strings.Builder, c *x509.Certificate, now time.Time) {
	line := func(k, v string) { fmt.Fprintf(b, "  %-12s %s\n", k+":", v) }
	switch id, err := IdentityOf(c); {
	case err == nil:
		line("identity", id.String()+" ("+id.URI()+")")
	case c.IsCA:
		line("identity", "none (a CA)")
	default:
		line("identity", "none: "+err.Error())
	}
	line("subject", c.Subject.String())
	line("issuer", c.Issuer.String())
	line("serial", c.SerialNumber.Text(16))
	line("ca", fmt.Sprint(c.IsCA))
	if len(c.DNSNames) > 0 {
		line("dns", strings.Join(c.DNSNames, ", "))
	}
	if len(c.IPAddresses) > 0 {
		ips := make([]string, len(c.IPAddresses))
		for i, ip := range c.IPAddresses {
			ips[i] = ip.String()
		}
		line("ip", strings.Join(ips, ", "))
	}
	if len(c.URIs) > 0 {
		us := make([]string, len(c.URIs))
		for i, u := range c.URIs {
			us[i] = u.String()
		}
		line("uri", strings.Join(us, ", "))
	}
	var usage []string
	for _, u := range c.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			usage = append(usage, "server")
		case x509.ExtKeyUsageClientAuth:
			usage = append(usage, "client")
		default:
			usage = append(usage, fmt.Sprintf("other(%d)", u))
		}
	}
	if len(usage) > 0 {
		line("usage", strings.Join(usage, ", "))
	}
	line("not before", c.NotBefore.UTC().Format(time.RFC3339))
	line("not after", c.NotAfter.UTC().Format(time.RFC3339))
	switch {
	case now.Before(c.NotBefore):
		line("status", "NOT YET VALID (starts in "+c.NotBefore.Sub(now).Round(time.Second).String()+")")
	case now.After(c.NotAfter):
		line("status", "EXPIRED ("+now.Sub(c.NotAfter).Round(time.Second).String()+" ago)")
	default:
		line("status", "valid ("+c.NotAfter.Sub(now).Round(time.Second).String()+" left)")
	}
}
