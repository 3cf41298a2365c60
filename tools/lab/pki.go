package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/escape-mtd/escape/internal/mtls"
)

// The lab's PKI is what an operator would set up with `escape-plane certs`:
// one CA, whose key stays with the lab (root namespace), and a certificate
// for every agent (named after its host), the plane and an operator. Each
// machine gets its own copy of ca.crt, cert and key under its
// /etc/escape/pki, and nothing else.

const (
	caName       = "escape-lab-ca"
	caValidity   = 30 * 24 * time.Hour
	certValidity = 7 * 24 * time.Hour
	// DefaultOperator names the operator identity Up issues.
	DefaultOperator = "lab"
)

// newCA makes the lab's CA in dir (ca.crt, ca.key).
func newCA(dir string) error {
	if _, _, err := mtls.InitCA(mtls.InitCARequest{Dir: dir, Name: caName, Validity: caValidity, Force: true}); err != nil {
		return fmt.Errorf("make the lab CA: %w", err)
	}
	return nil
}

// Issue issues a certificate for role/name from the lab's CA and writes
// ca.crt, <file>.crt and <file>.key into dir (file is the role for agents
// and the plane, as each machine's configuration expects, else the name).
// Tests use it for identities of their own, with mtls.WithValidity for a
// certificate that expires soon.
func (inv *Inventory) Issue(role mtls.Role, name, dir string, opts ...mtls.IssueOption) (mtls.Files, error) {
	return issue(inv.PKI.Dir, role, name, dir, opts...)
}

func issue(caDir string, role mtls.Role, name, dir string, opts ...mtls.IssueOption) (mtls.Files, error) {
	id := mtls.Identity{Role: role, Name: name}
	ca, err := mtls.LoadCA(filepath.Join(caDir, "ca.crt"), filepath.Join(caDir, "ca.key"))
	if err != nil {
		return mtls.Files{}, fmt.Errorf("issue %s: %w", id, err)
	}
	if len(opts) == 0 {
		now := time.Now()
		opts = []mtls.IssueOption{mtls.WithValidity(now.Add(-time.Minute), now.Add(certValidity))}
	}
	certPEM, keyPEM, err := ca.Issue(id, opts...)
	if err != nil {
		return mtls.Files{}, fmt.Errorf("issue %s: %w", id, err)
	}
	file := name
	if role == mtls.RoleAgent || role == mtls.RolePlane {
		file = string(role)
	}
	f := mtls.IssuedFiles(dir, file)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return mtls.Files{}, fmt.Errorf("issue %s: %w", id, err)
	}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{f.CA, ca.CertPEM(), 0o644}, {f.Cert, certPEM, 0o644}, {f.Key, keyPEM, 0o600}} {
		if err := atomicfile.WriteFile(w.path, w.data, w.mode); err != nil {
			return mtls.Files{}, fmt.Errorf("issue %s: %w", id, err)
		}
	}
	return f, nil
}

// inside maps a machine's certificate files to the paths it sees them at.
func inside(f mtls.Files) mtls.Files {
	return mtls.Files{CA: filepath.Join(InsidePKI, filepath.Base(f.CA)), Cert: filepath.Join(InsidePKI, filepath.Base(f.Cert)),
		Key: filepath.Join(InsidePKI, filepath.Base(f.Key))}
}

// makePKI makes the CA and issues every identity the lab's machines need.
func makePKI(inv *Inventory) error {
	if err := newCA(inv.PKI.Dir); err != nil {
		return err
	}
	var err error
	if inv.PKI.Operator, err = inv.Issue(mtls.RoleOperator, inv.PKI.OperatorName, filepath.Join(inv.PKI.Dir, "operator")); err != nil {
		return err
	}
	if inv.Plane.TLS, err = inv.Issue(mtls.RolePlane, "plane", filepath.Join(inv.Plane.Dir, "etc", "pki")); err != nil {
		return err
	}
	for i := range inv.Hosts {
		h := &inv.Hosts[i]
		if h.TLS, err = inv.Issue(mtls.RoleAgent, h.Name, filepath.Join(h.Dir, "etc", "pki")); err != nil {
			return err
		}
	}
	return nil
}
