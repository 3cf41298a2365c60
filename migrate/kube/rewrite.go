package kube

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
)

// rewriteBaseImage copies the archive at src to a new file beside dst
// (renamed onto dst once whole) with config.dump's rootfsImageRef set to
// ref, every other entry as it was. containerd's restore pulls the base
// image by that reference (client.Pull, with no credentials and no
// registry configuration of the CRI), so it must name one that the node
// can always serve: the agent's loopback mirror of its own content store.
func rewriteBaseImage(src, dst, ref string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("rewrite base image of %s: %w", src, err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return fmt.Errorf("rewrite base image of %s: %w", src, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	tr, tw := tar.NewReader(in), tar.NewWriter(tmp)
	done := false
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("rewrite base image of %s: read: %w", src, err)
		}
		if path.Clean(hdr.Name) != archiveConfig || hdr.Typeflag != tar.TypeReg {
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("rewrite base image of %s: %w", src, err)
			}
			if _, err := io.Copy(tw, tr); err != nil {
				return fmt.Errorf("rewrite base image of %s: copy %s: %w", src, hdr.Name, err)
			}
			continue
		}
		var cfg map[string]any
		if err := json.NewDecoder(io.LimitReader(tr, maxDumpFileBytes)).Decode(&cfg); err != nil {
			return fmt.Errorf("rewrite base image of %s: %s: %w", src, archiveConfig, err)
		}
		cfg["rootfsImageRef"] = ref
		data, err := json.Marshal(cfg)
		if err != nil {
			return err
		}
		hdr.Size = int64(len(data))
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("rewrite base image of %s: %w", src, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("rewrite base image of %s: %w", src, err)
		}
		done = true
	}
	if !done {
		return fmt.Errorf("rewrite base image of %s: %w: no %s", src, ErrBadArchive, archiveConfig)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("rewrite base image of %s: %w", src, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("rewrite base image of %s: %w", src, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("rewrite base image of %s: %w", src, err)
	}
	return nil
}
