package node

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/escape-mtd/escape/migrate"
	"go.uber.org/zap"
)

// Where the node keeps things. The plane names images, never paths: an
// image lives at <SharedDir>/escape/images/<name> when the host mounts
// shared storage, at <StateDir>/images/<name> otherwise. CRIU's work
// directories are always local, for the lazy-pages socket lives there and
// a socket on shared storage is not one.

func (n *Node) imageRoot() string {
	if n.cfg.SharedDir != "" {
		return filepath.Join(n.cfg.SharedDir, "escape", "images")
	}
	return filepath.Join(n.cfg.StateDir, "images")
}

func (n *Node) criuDir() string  { return filepath.Join(n.cfg.StateDir, "criu") }
func (n *Node) workRoot() string { return filepath.Join(n.cfg.StateDir, "work") }
func (n *Node) leaseDir() string { return filepath.Join(n.cfg.StateDir, "leases") }
func (n *Node) maskDir() string  { return filepath.Join(n.cfg.StateDir, "empty") }

// criuConfig is the CRIU configuration file of container id, which its OCI
// spec names (org.criu.config): runc reads it on dump and restore alike.
func (n *Node) criuConfig(id string) string { return filepath.Join(n.criuDir(), id+".conf") }

// imagePath validates name and returns its directory, refusing one that
// would lead through a symbolic link: shared storage is written by other
// hosts too, and a link there must not send a dump, or its removal,
// anywhere else.
func (n *Node) imagePath(name migrate.ImageName) (string, error) {
	if err := name.Validate(); err != nil {
		return "", err
	}
	root := n.imageRoot()
	p := root
	for _, el := range strings.Split(string(name), "/") {
		p = filepath.Join(p, el)
		st, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("image %s: %w", name, err)
		}
		if !st.IsDir() {
			return "", fmt.Errorf("image %s: %s is not a directory", name, p)
		}
	}
	return filepath.Join(root, string(name)), nil
}

// workDirs are the local CRIU work directories of an image's dump and of
// its restores. They are named by a digest of the image's name so that one
// image's never lies inside another's.
func (n *Node) workDirs(name migrate.ImageName) (dump, restore string) {
	sum := sha256.Sum256([]byte(name))
	base := filepath.Join(n.workRoot(), hex.EncodeToString(sum[:12]))
	return filepath.Join(base, "dump"), filepath.Join(base, "restore")
}

// prepareState creates the node's directories, mounts its mask directory,
// reads (or creates) the shared storage's id and strips what a crashed
// agent left in the containers' CRIU configurations.
func (n *Node) prepareState() error {
	for _, d := range []string{n.cfg.StateDir, n.criuDir(), n.workRoot(), n.leaseDir(), n.imageRoot()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("node state: %w", err)
		}
	}
	if err := n.stripConfigs(); err != nil {
		return err
	}
	if n.cfg.SharedDir != "" {
		id, err := storageID(filepath.Join(n.cfg.SharedDir, "escape", "storage-id"))
		if err != nil {
			return err
		}
		n.storageID = id
	}
	release, err := prepareMaskDir(n.maskDir())
	if err != nil {
		return fmt.Errorf("node state: %w", err)
	}
	n.releaseMask = release
	return nil
}

// storageID reads the shared storage's id, creating it if it has none:
// with O_EXCL, so that of two hosts starting at once one id wins.
func storageID(path string) (string, error) {
	read := func() (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		id := strings.TrimSpace(string(b))
		if len(id) != 32 {
			return "", fmt.Errorf("shared storage id in %s: %q is not 32 hex digits", path, id)
		}
		if _, err := hex.DecodeString(id); err != nil {
			return "", fmt.Errorf("shared storage id in %s: %q is not 32 hex digits", path, id)
		}
		return id, nil
	}
	if id, err := read(); err == nil || !errors.Is(err, os.ErrNotExist) {
		return id, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("shared storage id: %w", err)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	// Written whole to a temporary file and linked into place: a reader
	// never sees a half-written id, and link fails if one exists.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".storage-id-*")
	if err != nil {
		return "", fmt.Errorf("shared storage id: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(hex.EncodeToString(b[:]) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("shared storage id: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("shared storage id: %w", err)
	}
	return read()
}

// CRIU options that a single restore adds to a container's configuration
// and takes out again before anything else can dump or restore it.
const (
	optLazyPages = "lazy-pages"
	optTCPClose  = "tcp-close"
)

// writeCRIUConfig writes the CRIU configuration of s's container.
// Established connections are carried. Connections still in flight, which
// the kernel completed while the application was frozen and never
// accepted, are skipped: without skip-in-flight a client that connects
// during a dump fails the dump ("In-flight connection"), and with it the
// migration (seen in the demo, where the client reconnects after each
// rollback); after a migration such a client sees its connection reset, as
// after a restart. The network lock is the spec's (nftables unless it says
// iptables; docs/plane.md). runc's masked directories are external mounts
// bound to the node's empty read-only directory (maskConfig).
func (n *Node) writeCRIUConfig(s migrate.Spec) error {
	masks, err := maskConfig(n.maskDir())
	if err != nil {
		return fmt.Errorf("criu config: %w", err)
	}
	lock := s.NetworkLock
	if lock == "" {
		lock = "nftables"
	}
	conf := "tcp-established\nskip-in-flight\nnetwork-lock " + lock + "\n" + masks
	if err := atomicfile.WriteFile(n.criuConfig(s.ID), []byte(conf), 0o644); err != nil {
		return fmt.Errorf("criu config: %w", err)
	}
	return nil
}

// writeAdoptedCRIUConfig writes the CRIU configuration of an adopted
// container, which the node puts in its spec for every restore (runc does
// not forward tcp-established on restore). Its first dump ran without the
// file, so with CRIU's default network lock (iptables): the file says the
// same, for a restore to lift the lock its dump took. runc's masked
// directories are left to CRIU as they are: that dump archived them.
func (n *Node) writeAdoptedCRIUConfig(id string) error {
	conf := "tcp-established\nskip-in-flight\nnetwork-lock iptables\n"
	if b, err := os.ReadFile(n.criuConfig(id)); err == nil && string(b) == conf {
		return nil
	}
	if err := atomicfile.WriteFile(n.criuConfig(id), []byte(conf), 0o644); err != nil {
		return fmt.Errorf("criu config: %w", err)
	}
	return nil
}

// stripConfigs takes lazy-pages and tcp-close out of every container's
// CRIU configuration: a crashed agent may have left them there, and the
// next dump must not find them.
func (n *Node) stripConfigs() error {
	ents, err := os.ReadDir(n.criuDir())
	if err != nil {
		return fmt.Errorf("node state: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".conf") {
			continue
		}
		p := filepath.Join(n.criuDir(), e.Name())
		for _, opt := range []string{optLazyPages, optTCPClose} {
			had, err := stripOption(p, opt)
			if err != nil {
				errs = append(errs, err)
			} else if had {
				n.log.Warn("removed a restore's option a crashed agent left in a CRIU configuration", zap.String("file", p), zap.String("option", opt))
			}
		}
	}
	return errors.Join(errs...)
}

// addOption appends opt to a CRIU configuration file, atomically.
func addOption(path, opt string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("criu config: %w", err)
	}
	if hasOption(b, opt) {
		return nil
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	if err := atomicfile.WriteFile(path, append(b, opt+"\n"...), 0o644); err != nil {
		return fmt.Errorf("criu config: %w", err)
	}
	return nil
}

// stripOption removes what addOption added and says whether it was there.
// A missing file has nothing to strip.
func stripOption(path, opt string) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("criu config: %w", err)
	}
	if !hasOption(b, opt) {
		return false, nil
	}
	var out [][]byte
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if string(bytes.TrimSpace(line)) != opt {
			out = append(out, line)
		}
	}
	if err := atomicfile.WriteFile(path, bytes.Join(out, nil), 0o644); err != nil {
		return false, fmt.Errorf("criu config: %w", err)
	}
	return true, nil
}

func hasOption(conf []byte, opt string) bool {
	for _, line := range bytes.Split(conf, []byte("\n")) {
		if string(bytes.TrimSpace(line)) == opt {
			return true
		}
	}
	return false
}
