package lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/escape-mtd/escape/internal/atomicfile"
)

// APIServerPKI is what a bare kube-apiserver on loopback needs (labtest's
// APIServer): its serving certificate, the CA it trusts for clients, the
// service-account key pair, and an admin kubeconfig.
type APIServerPKI struct {
	CA, ServerCert, ServerKey, SAKey, SAPub, AdminKubeconfig string
}

// MakeAPIServerPKI writes, under dir, a throwaway Kubernetes CA (kept in
// memory only: nothing else is ever signed), the apiserver's certificate
// for 127.0.0.1 and localhost, the service-account keys, and a kubeconfig
// for a system:masters user of server.
func MakeAPIServerPKI(dir, server string) (APIServerPKI, error) {
	now := time.Now()
	ca, err := newKubeCA(now)
	if err != nil {
		return APIServerPKI{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return APIServerPKI{}, fmt.Errorf("apiserver PKI: %w", err)
	}
	f := APIServerPKI{CA: filepath.Join(dir, "ca.crt"), ServerCert: filepath.Join(dir, "apiserver.crt"),
		ServerKey: filepath.Join(dir, "apiserver.key"), SAKey: filepath.Join(dir, "sa.key"), SAPub: filepath.Join(dir, "sa.pub"),
		AdminKubeconfig: filepath.Join(dir, "admin.conf")}
	srvCert, srvKey, err := ca.issue(kubeCert{cn: "kube-apiserver", server: true,
		ips: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, dns: []string{"localhost"}}, now)
	if err != nil {
		return APIServerPKI{}, fmt.Errorf("apiserver PKI: %w", err)
	}
	admCert, admKey, err := ca.issue(kubeCert{cn: "escape-test-admin", orgs: []string{"system:masters"}}, now)
	if err != nil {
		return APIServerPKI{}, fmt.Errorf("apiserver PKI: %w", err)
	}
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return APIServerPKI{}, fmt.Errorf("service-account key: %w", err)
	}
	saKey, err := keyToPEM(sa)
	if err != nil {
		return APIServerPKI{}, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(sa.Public())
	if err != nil {
		return APIServerPKI{}, fmt.Errorf("service-account public key: %w", err)
	}
	for path, data := range map[string][]byte{f.CA: ca.pem, f.ServerCert: srvCert, f.ServerKey: srvKey, f.SAKey: saKey,
		f.SAPub:           pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
		f.AdminKubeconfig: kubeconfig(server, ca.pem, "escape-test-admin", admCert, admKey)} {
		if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
			return APIServerPKI{}, fmt.Errorf("apiserver PKI: %w", err)
		}
	}
	return f, nil
}
