package lab

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/escape-mtd/escape/internal/atomicfile"
)

// The node's PKI is Kubernetes's own, apart from the lab's mTLS CA: the
// identities are Kubernetes users and groups (CN and O), which the lab's
// CA, issuing ESCAPE roles, does not make. Its CA key stays in the root
// namespace (<pki>/kubernetes); the node host gets the certificates and
// keys of its components under /etc/kubernetes/pki.

const kubeCAName = "escape-lab-kubernetes-ca"

// kubeCA is the Kubernetes CA of a lab.
type kubeCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

// kubeCert is what one certificate of the node is for.
type kubeCert struct {
	file   string // <file>.crt and <file>.key under /etc/kubernetes/pki
	cn     string
	orgs   []string
	server bool
	ips    []netip.Addr
	dns    []string
}

func newKubeCA(now time.Time) (*kubeCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("kubernetes CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: kubeCAName},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("kubernetes CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &kubeCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

// issue signs a certificate and a new key for what.
func (ca *kubeCA) issue(what kubeCert, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("key for %s: %w", what.cn, err)
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if what.server {
		usage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: what.cn, Organization: what.orgs},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(certValidity),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage, DNSNames: what.dns,
	}
	for _, ip := range what.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate for %s: %w", what.cn, err)
	}
	keyPEM, err = keyToPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

func keyToPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// kubeCerts are the node's certificates.
func kubeCerts(k *Kubernetes, ip netip.Addr) []kubeCert {
	loop := netip.MustParseAddr("127.0.0.1")
	return []kubeCert{
		{file: "apiserver", cn: "kube-apiserver", server: true, ips: []netip.Addr{ip, loop, kubeServiceIP},
			dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost", k.NodeName}},
		{file: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}},
		{file: "apiserver-etcd-client", cn: "kube-apiserver-etcd-client"},
		{file: "etcd-server", cn: "etcd", server: true, ips: []netip.Addr{loop}, dns: []string{"localhost"}},
		{file: "admin", cn: "escape-lab-admin", orgs: []string{"system:masters"}},
		{file: "controller-manager", cn: "system:kube-controller-manager"},
		{file: "scheduler", cn: "system:kube-scheduler"},
		{file: "kubelet-client", cn: "system:node:" + k.NodeName, orgs: []string{"system:nodes"}},
		{file: "kubelet", cn: k.NodeName, server: true, ips: []netip.Addr{ip}, dns: []string{k.NodeName}},
	}
}

// kubeconfigs maps each kubeconfig file the node uses to its user's certificate.
var kubeconfigs = map[string]string{
	"admin.conf":              "admin",
	"controller-manager.conf": "controller-manager",
	"scheduler.conf":          "scheduler",
	"kubelet.conf":            "kubelet-client",
}

// makeKubePKI makes the Kubernetes CA (key under caDir, in the root
// namespace), the node's certificates and service-account key under
// k.Dir/etc/pki, and its kubeconfigs under k.Dir/etc.
func makeKubePKI(k *Kubernetes, ip netip.Addr, caDir string) error {
	now := time.Now()
	ca, err := newKubeCA(now)
	if err != nil {
		return err
	}
	caKey, err := keyToPEM(ca.key.(*ecdsa.PrivateKey))
	if err != nil {
		return err
	}
	pki := filepath.Join(k.Dir, "etc", "pki")
	write := func(path string, data []byte, mode os.FileMode) error {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("kubernetes PKI: %w", err)
		}
		if err := atomicfile.WriteFile(path, data, mode); err != nil {
			return fmt.Errorf("kubernetes PKI: %w", err)
		}
		return nil
	}
	if err := write(filepath.Join(caDir, "ca.crt"), ca.pem, 0o644); err != nil {
		return err
	}
	if err := write(filepath.Join(caDir, "ca.key"), caKey, 0o600); err != nil {
		return err
	}
	if err := write(filepath.Join(pki, "ca.crt"), ca.pem, 0o644); err != nil {
		return err
	}
	issued := map[string][2][]byte{}
	for _, what := range kubeCerts(k, ip) {
		certPEM, keyPEM, err := ca.issue(what, now)
		if err != nil {
			return fmt.Errorf("kubernetes PKI: %w", err)
		}
		issued[what.file] = [2][]byte{certPEM, keyPEM}
		if err := write(filepath.Join(pki, what.file+".crt"), certPEM, 0o644); err != nil {
			return err
		}
		if err := write(filepath.Join(pki, what.file+".key"), keyPEM, 0o600); err != nil {
			return err
		}
	}
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("service-account key: %w", err)
	}
	saKey, err := keyToPEM(sa)
	if err != nil {
		return err
	}
	saPub, err := x509.MarshalPKIXPublicKey(sa.Public())
	if err != nil {
		return fmt.Errorf("service-account public key: %w", err)
	}
	if err := write(filepath.Join(pki, "sa.key"), saKey, 0o600); err != nil {
		return err
	}
	if err := write(filepath.Join(pki, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}), 0o644); err != nil {
		return err
	}
	for file, user := range kubeconfigs {
		kc := kubeconfig(k.Server, ca.pem, user, issued[user][0], issued[user][1])
		if err := write(filepath.Join(k.Dir, "etc", file), kc, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// kubeconfig is a self-contained kubeconfig for user, with its
// certificate and key inline.
func kubeconfig(server string, caPEM []byte, user string, certPEM, keyPEM []byte) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: escape-lab
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: %s@escape-lab
  context:
    cluster: escape-lab
    user: %s
current-context: %s@escape-lab
`, server, b64(caPEM), user, b64(certPEM), b64(keyPEM), user, user, user)
}
