package mtls

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Files names the three files a Source loads.
type Files struct {
	// CA is the PEM bundle of the CAs peers' certificates must chain to.
	CA string
	// Cert is the own certificate, then any intermediates, in PEM.
	Cert string
	// Key is the own private key in PEM, mode 0600.
	Key string
}

// Validate reports a missing or relative path: a daemon's working
// directory is nobody's business, so every path is absolute.
func (f Files) Validate() error {
	var errs []error
	for _, p := range []struct{ field, path string }{{"ca", f.CA}, {"cert", f.Cert}, {"key", f.Key}} {
		switch {
		case p.path == "":
			errs = append(errs, fmt.Errorf("tls %s: no path given", p.field))
		case !filepath.IsAbs(p.path):
			errs = append(errs, fmt.Errorf("tls %s: path %q is not absolute", p.field, p.path))
		}
	}
	return errors.Join(errs...)
}

// SecretFiles are the files of a Kubernetes TLS Secret (as cert-manager
// writes it) mounted as the directory dir: ca.crt, tls.crt, tls.key.
func SecretFiles(dir string) Files {
	return Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key")}
}

// IssuedFiles are the files `escape-plane certs issue --out-dir dir --name
// name` writes: ca.crt, <name>.crt, <name>.key.
func IssuedFiles(dir, name string) Files {
	return Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")}
}

// stamp is what a file looks like from outside; a rotation changes it. The
// stat follows symlinks, so swapping a Kubernetes Secret's ..data link
// changes the inode seen through tls.crt -> ..data/tls.crt.
type stamp struct {
	dev, ino  uint64
	size      int64
	mtimeNano int64
	missing   bool
}

type stamps [3]stamp

func statFiles(f Files) stamps {
	var s stamps
	for i, p := range []string{f.CA, f.Cert, f.Key} {
		s[i] = statFile(p)
	}
	return s
}

func statFile(path string) stamp {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{missing: true}
	}
	st := stamp{size: fi.Size(), mtimeNano: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino = uint64(sys.Dev), sys.Ino
	}
	return st
}
