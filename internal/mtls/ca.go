package mtls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
)

// DefaultValidity is how long an issued certificate is valid without
// WithValidity: a year.
const DefaultValidity = 365 * 24 * time.Hour

// backdate is how far before now a certificate's validity starts, so that
// a host whose clock is a little behind the CA's accepts it at once.
const backdate = time.Minute

// CA is a certificate authority that issues ESCAPE identities. It signs
// leaf certificates only (path length 0): no intermediate below it.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	now     func() time.Time
}

// NewCA makes a self-signed CA named name (its common name, a ValidName)
// with a fresh ECDSA P-256 key, valid from a minute ago for validity.
func NewCA(name string, validity time.Duration, opts ...CAOption) (*CA, error) {
	cfg := caConfig{now: time.Now}
	for _, o := range opts {
		o.applyCA(&cfg)
	}
	if !ValidName(name) {
		return nil, fmt.Errorf("new CA: bad name %q: want %s", name, namePattern)
	}
	if validity <= backdate {
		return nil, fmt.Errorf("new CA %s: validity %s is too short", name, validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new CA %s: generate key: %w", name, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("new CA %s: %w", name, err)
	}
	now := cfg.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"ESCAPE"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("new CA %s: sign: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new CA %s: %w", name, err)
	}
	return &CA{cert: cert, certPEM: encodeCert(der), key: key, now: cfg.now}, nil
}

// LoadCA reads a CA's certificate and key, as NewCA's CertPEM and KeyPEM
// wrote them (or openssl, or cert-manager's CA Secret).
func LoadCA(certPath, keyPath string, opts ...CAOption) (*CA, error) {
	cfg := caConfig{now: time.Now}
	for _, o := range opts {
		o.applyCA(&cfg)
	}
	certData, err := readBounded(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate: %w", err)
	}
	certs, err := ParseCertificatePEM(certData)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate %s: %w", certPath, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("load CA certificate %s: holds %d certificates, want one", certPath, len(certs))
	}
	cert := certs[0]
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("load CA certificate %s: %q is not a CA certificate", certPath, cert.Subject.CommonName)
	}
	keyData, err := readBounded(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA key: %w", err)
	}
	key, err := ParseKeyPEM(keyData)
	if err != nil {
		return nil, fmt.Errorf("load CA key %s: %w", keyPath, err)
	}
	if !samePublicKey(cert, key) {
		return nil, fmt.Errorf("load CA: key %s is not the key of certificate %s", keyPath, certPath)
	}
	return &CA{cert: cert, certPEM: encodeCert(cert.Raw), key: key, now: cfg.now}, nil
}

// Certificate is the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM is the CA's certificate in PEM, what ca.crt holds.
func (ca *CA) CertPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// KeyPEM is the CA's private key in PKCS#8 PEM. Keep it off the hosts.
func (ca *CA) KeyPEM() ([]byte, error) { return encodeKey(ca.key) }

// Issue makes a fresh ECDSA P-256 key and a certificate for id, signed by
// the CA: the identity as a URI SAN; for an agent its name as a DNS SAN
// too; ServerAuth and ClientAuth for agents and the plane, ClientAuth only
// for operators (who never serve).
func (ca *CA) Issue(id Identity, opts ...IssueOption) (certPEM, keyPEM []byte, err error) {
	cfg := issueConfig{now: ca.now}
	for _, o := range opts {
		o.applyIssue(&cfg)
	}
	if err := id.Validate(); err != nil {
		return nil, nil, fmt.Errorf("issue: %w", err)
	}
	tmpl, err := ca.template(id, &cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s: %w", id, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s: generate key: %w", id, err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s: sign: %w", id, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue %s: %w", id, err)
	}
	return encodeCert(der), keyPEM, nil
}

func (ca *CA) template(id Identity, cfg *issueConfig) (*x509.Certificate, error) {
	notBefore, notAfter := cfg.notBefore, cfg.notAfter
	if notBefore.IsZero() && notAfter.IsZero() {
		now := cfg.now()
		notBefore, notAfter = now.Add(-backdate), now.Add(DefaultValidity)
	}
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("validity ends (%s) before it starts (%s)", notAfter.Format(time.RFC3339), notBefore.Format(time.RFC3339))
	}
	if notAfter.After(ca.cert.NotAfter) {
		return nil, fmt.Errorf("certificate would outlive its CA: valid until %s, CA %q until %s",
			notAfter.Format(time.RFC3339), ca.cert.Subject.CommonName, ca.cert.NotAfter.Format(time.RFC3339))
	}
	if notBefore.Before(ca.cert.NotBefore) {
		return nil, fmt.Errorf("certificate would start (%s) before its CA %q (%s)",
			notBefore.Format(time.RFC3339), ca.cert.Subject.CommonName, ca.cert.NotBefore.Format(time.RFC3339))
	}
	dns, ips, err := sans(id, cfg)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(id.URI())
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if id.Role == RoleOperator {
		usage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: id.Name, OrganizationalUnit: []string{string(id.Role)}, Organization: []string{"ESCAPE"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usage,
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
		DNSNames:              dns,
		IPAddresses:           ips,
	}, nil
}

func sans(id Identity, cfg *issueConfig) ([]string, []net.IP, error) {
	if id.Role == RoleOperator && (len(cfg.dns) > 0 || len(cfg.ips) > 0) {
		return nil, nil, errors.New("an operator certificate carries no DNS or IP names (operators never serve)")
	}
	var dns []string
	seen := map[string]bool{}
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			dns = append(dns, n)
		}
	}
	if id.Role == RoleAgent {
		add(id.Name)
	}
	for _, n := range cfg.dns {
		if err := checkDNSName(n); err != nil {
			return nil, nil, err
		}
		add(n)
	}
	var ips []net.IP
	for _, a := range cfg.ips {
		if !a.IsValid() || a.IsUnspecified() {
			return nil, nil, fmt.Errorf("bad IP SAN %q: want a host's own address", a)
		}
		ips = append(ips, net.IP(a.Unmap().AsSlice()))
	}
	return dns, ips, nil
}

// checkDNSName refuses what is not a plain host name; wildcards too, an
// identity names one host.
func checkDNSName(n string) error {
	if n == "" || len(n) > 253 {
		return fmt.Errorf("bad DNS name %q: want 1 to 253 bytes", n)
	}
	for _, label := range strings.Split(n, ".") {
		if len(label) == 0 || len(label) > 63 {
			return fmt.Errorf("bad DNS name %q: empty or over-long label", n)
		}
		for i, r := range label {
			ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' && i > 0 && i < len(label)-1
			if !ok {
				return fmt.Errorf("bad DNS name %q: %q not allowed there (lower-case letters, digits, inner '-')", n, r)
			}
		}
	}
	return nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil
}
