package bundle

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path"
	"strings"
)

// The stream header: 8 bytes of magic, a big-endian uint16 version and a
// big-endian uint16 of flags (none are defined; a reader refuses any).
const (
	magic        = "ESCBNDL\n"
	version      = 1
	headerLen    = len(magic) + 4
	manifestName = ".escape-bundle-manifest.json"
	// manifestDigestKey is the PAX record, on the manifest's tar header,
	// that carries the SHA-256 of the manifest's bytes.
	manifestDigestKey = "ESCAPE.manifest.sha256"
	manifestVersion   = 1

	maxNameLen      = 4096 // PATH_MAX
	maxComponentLen = 255  // NAME_MAX
	// maxWindow bounds the zstd window a reader accepts, and so its
	// memory: the writer's levels use at most 8 MiB.
	maxWindow = 8 << 20
	// entryOverhead bounds what one entry adds to the decompressed stream
	// besides its data: a tar header, a PAX header for a long name, padding.
	entryOverhead = 16 << 10
)

// ErrCorrupt is wrapped by every error that says the stream is not a whole,
// well-formed bundle: bad framing, a digest or size that does not match, a
// forbidden name or type, a missing or extra entry.
var ErrCorrupt = errors.New("corrupt bundle")

// ErrLimit is wrapped by the errors that say the bundle exceeds a reader's
// limit (WithMaxBytes, WithMaxFiles).
var ErrLimit = errors.New("bundle exceeds a limit")

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

func header() []byte {
	b := make([]byte, headerLen)
	copy(b, magic)
	binary.BigEndian.PutUint16(b[len(magic):], version)
	return b
}

func checkHeader(b []byte) error {
	if string(b[:len(magic)]) != magic {
		return corruptf("not a bundle: stream starts with %q, want %q", b[:len(magic)], magic)
	}
	if v := binary.BigEndian.Uint16(b[len(magic):]); v != version {
		return corruptf("bundle format version %d, this reader knows only %d", v, version)
	}
	if f := binary.BigEndian.Uint16(b[len(magic)+2:]); f != 0 {
		return corruptf("bundle flags %#04x, this reader knows none", f)
	}
	return nil
}

// manifest is the bundle's last tar entry: every other entry, in order,
// with what the reader checks it against.
type manifest struct {
	Version int `json:"version"`
	// Mode is the permission bits of the bundled directory itself.
	Mode    uint32          `json:"mode"`
	Entries []manifestEntry `json:"entries"`
}

type manifestEntry struct {
	Name   string `json:"name"`
	Type   string `json:"type"` // typeFile or typeDir
	Mode   uint32 `json:"mode"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"` // hex, files only
}

const (
	typeFile = "file"
	typeDir  = "dir"
)

// manifestCap bounds the manifest a reader accepts, from the entries it has
// already accepted: JSON escapes a byte of a name into at most 6.
func manifestCap(names int, nameBytes int64) int64 {
	return 4096 + int64(names)*256 + 6*nameBytes
}

// checkName accepts only the names Write produces: relative, clean,
// slash-separated, within the directory, not the manifest's.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > maxNameLen:
		return fmt.Errorf("name of %d bytes, longer than %d", len(name), maxNameLen)
	case strings.ContainsRune(name, 0):
		return fmt.Errorf("name %q holds a NUL byte", name)
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("absolute name %q", name)
	case path.Clean(name) != name:
		return fmt.Errorf("name %q is not clean (want %q)", name, path.Clean(name))
	case name == "..", strings.HasPrefix(name, "../"):
		return fmt.Errorf("name %q escapes the directory", name)
	case name == ".":
		return errors.New(`name "." (the directory itself)`)
	case name == manifestName:
		return fmt.Errorf("name %q is reserved for the manifest", name)
	}
	for c := range strings.SplitSeq(name, "/") {
		if len(c) > maxComponentLen {
			return fmt.Errorf("name %q has a component longer than %d bytes", name, maxComponentLen)
		}
	}
	return nil
}
