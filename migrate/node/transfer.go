package node

import (
	"context"
	"errors"
	"fmt"
	"github.com/escape-mtd/escape/migrate/bundle"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/escape-mtd/escape/migrate"
)

// Fetch copies the named checkpoint image from the peer that offered it
// (compressed, checksummed, and in place only once whole: bundle). An
// image the host has whole already is not fetched again ("exists"); a
// partial one is removed first.
func (n *Node) Fetch(ctx context.Context, name migrate.ImageName, from migrate.Peer) (migrate.TransferResult, error) {
	fail := func(err error) (migrate.TransferResult, error) {
		return migrate.TransferResult{}, n.fail("fetch", "", fmt.Errorf("%s: %w", name, err))
	}
	dir, err := n.imagePath(name)
	if err == nil {
		err = validPeer(from)
	}
	if err == nil && n.peers == nil {
		err = errors.New("this node has no way to reach other hosts (WithPeers)")
	}
	if err != nil {
		return fail(err)
	}
	defer n.lockImage(name)()
	if size, err := verifyDir(dir); err == nil {
		return migrate.TransferResult{Did: "exists", Bytes: size}, nil
	}
	if err := dropDump(dir); err != nil {
		return fail(fmt.Errorf("remove the partial image: %w", err))
	}
	if _, err := os.Stat(dir); err == nil {
		return fail(errors.New("its directory holds other images"))
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fail(err)
	}
	t0 := time.Now()
	rc, err := n.peers.Open(ctx, from)
	if err != nil {
		return fail(fmt.Errorf("open the offer of %s: %w", from.Name, err))
	}
	defer rc.Close()
	cr := &countingReader{r: rc}
	st, err := bundle.Read(ctx, cr, dir)
	files := st.Files
	if err != nil {
		return fail(fmt.Errorf("from %s: %w", from.Name, err))
	}
	size, err := verifyDir(dir)
	if err != nil {
		_ = dropDump(dir)
		return fail(fmt.Errorf("from %s: %w", from.Name, err))
	}
	return migrate.TransferResult{Did: "fetched", Bytes: size, Wire: cr.n, Files: files, Took: time.Since(t0)}, nil
}

// serveCheckpoint writes the named image as a bundle.
func (n *Node) serveCheckpoint(ctx context.Context, name migrate.ImageName, w io.Writer) error {
	dir, err := n.imagePath(name)
	if err != nil {
		return err
	}
	if _, err := verifyDir(dir); err != nil {
		return err
	}
	_, err = bundle.Write(ctx, w, dir)
	return err
}
