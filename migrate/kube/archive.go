package kube

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/escape-mtd/escape/migrate"
)

// The files of a CRI checkpoint archive (containerd's CheckpointContainer;
// checkpointctl's names) that a restore needs.
const (
	archiveConfig    = "config.dump"
	archiveSpec      = "spec.dump"
	archiveStatus    = "status.dump"
	archiveCRIUDir   = "checkpoint/"
	archiveInventory = "checkpoint/inventory.img"
)

// Limits on what ParseArchive accepts, so that a hostile or broken file
// costs bounded memory and time.
const (
	maxArchiveEntries = 1 << 14
	maxDumpFileBytes  = 1 << 20
)

// ArchiveInfo is what a checkpoint archive says about the container it
// holds (its config.dump), checked to be whole enough to restore.
type ArchiveInfo struct {
	// ID and Name are the CRI's container id and name of the checkpointed
	// container ("<container>_<pod>_<namespace>_<uid>_<attempt>").
	ID   string `json:"id"`
	Name string `json:"name"`
	// RootfsImageName and RootfsImageRef are the image the container ran
	// from, by the name the pod gave and by reference (a repo digest, or
	// the image id when the image has none).
	RootfsImageName string    `json:"rootfsImageName"`
	RootfsImageRef  string    `json:"rootfsImageRef"`
	Runtime         string    `json:"runtime"`
	CheckpointedAt  time.Time `json:"checkpointedTime"`
	// Bytes is the archive's size.
	Bytes int64 `json:"-"`
}

// ErrBadArchive is wrapped by every refusal of ParseArchive.
var ErrBadArchive = migrate.ErrBadCheckpoint

// ParseArchive reads a checkpoint archive (an uncompressed tar) and checks
// that it holds what a CRI restore reads: config.dump and spec.dump as JSON,
// status.dump, and CRIU's images with their inventory. Only regular files
// and directories with clean relative names are accepted (containerd would
// skip anything else; here it means the file is not the kubelet's).
func ParseArchive(r io.Reader) (ArchiveInfo, error) {
	var info ArchiveInfo
	seen := map[string]bool{}
	tr := tar.NewReader(r)
	var total int64
	for n := 0; ; n++ {
		if n >= maxArchiveEntries {
			return info, fmt.Errorf("%w: more than %d entries", ErrBadArchive, maxArchiveEntries)
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return info, fmt.Errorf("%w: read tar: %v", ErrBadArchive, err)
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		if name == "" || path.IsAbs(name) || strings.HasPrefix(path.Clean(name), "..") || strings.Contains(name, "\x00") {
			return info, fmt.Errorf("%w: entry %q is not a clean relative name", ErrBadArchive, hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			seen[strings.TrimSuffix(path.Clean(name), "/")+"/"] = true
			continue
		case tar.TypeReg:
		default:
			return info, fmt.Errorf("%w: entry %q is neither a file nor a directory", ErrBadArchive, hdr.Name)
		}
		name = path.Clean(name)
		seen[name] = true
		total += hdr.Size
		switch name {
		case archiveConfig, archiveSpec, archiveStatus:
			if hdr.Size > maxDumpFileBytes {
				return info, fmt.Errorf("%w: %s is %d bytes", ErrBadArchive, name, hdr.Size)
			}
			data, err := io.ReadAll(io.LimitReader(tr, maxDumpFileBytes))
			if err != nil {
				return info, fmt.Errorf("%w: read %s: %v", ErrBadArchive, name, err)
			}
			if !json.Valid(data) {
				return info, fmt.Errorf("%w: %s is not JSON", ErrBadArchive, name)
			}
			if name == archiveConfig {
				if err := json.Unmarshal(data, &info); err != nil {
					return info, fmt.Errorf("%w: %s: %v", ErrBadArchive, name, err)
				}
			}
		}
	}
	for _, need := range []string{archiveConfig, archiveSpec, archiveStatus, archiveInventory} {
		if !seen[need] {
			return info, fmt.Errorf("%w: no %s", ErrBadArchive, need)
		}
	}
	if info.ID == "" || info.RootfsImageRef == "" {
		return info, fmt.Errorf("%w: %s names no container id or image", ErrBadArchive, archiveConfig)
	}
	info.Bytes = total
	return info, nil
}
