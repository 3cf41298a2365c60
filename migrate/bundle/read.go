package bundle

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Read receives a bundle from r into dir, which must not exist, and
// reports what it received. dir appears, whole and verified, only when Read
// succeeds: on any error nothing is left at dir or beside it, so a failed
// transfer is simply done again. Read consumes r to its end: the bundle must
// be the whole stream.
func Read(ctx context.Context, r io.Reader, dir string, opts ...ReadOption) (Stats, error) {
	start := time.Now()
	cfg := readConfig{maxBytes: DefaultMaxBytes, maxFiles: DefaultMaxFiles}
	for _, o := range opts {
		o(&cfg)
	}
	st, err := read(ctx, r, dir, cfg)
	st.Took = time.Since(start)
	if err != nil {
		return st, fmt.Errorf("read bundle into %s: %w", dir, ctxErr(ctx, err))
	}
	return st, nil
}

func read(ctx context.Context, r io.Reader, dir string, cfg readConfig) (st Stats, err error) {
	if err := cfg.check(); err != nil {
		return st, err
	}
	s, err := newStaging(dir)
	if err != nil {
		return st, err
	}
	defer func() {
		if err != nil {
			err = s.abandon(err)
		}
	}()
	st, mode, err := receive(ctx, r, s, cfg)
	if err != nil {
		return st, err
	}
	return st, s.commit(mode)
}

// receive reads the whole stream into the staging directory and verifies
// it, returning the mode of the directory itself.
func receive(ctx context.Context, r io.Reader, s *staging, cfg readConfig) (st Stats, mode uint32, err error) {
	// Ending ictx on an error unblocks a read in progress (see
	// unblockOnCancel), so that the zstd decoder's reading goroutine, which
	// Close waits for, returns even if the sender stalls.
	ictx, cancel := context.WithCancel(ctx)
	stop := unblockOnCancel(ictx, r, false)
	sr := &streamReader{ctx: ictx, r: r}
	var dec *zstd.Decoder
	defer func() {
		if err == nil {
			stop() // leave the caller's stream as it was
		}
		cancel()
		if dec != nil {
			dec.Close()
		}
		st.Wire = sr.n
	}()
	br := bufio.NewReaderSize(sr, bufSize)
	hdr := make([]byte, headerLen)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return st, 0, fmt.Errorf("read header: %w", classify(ictx, sr, err))
	}
	if err := checkHeader(hdr); err != nil {
		return st, 0, err
	}
	dec, err = zstd.NewReader(br,
		zstd.WithDecoderMaxWindow(maxWindow),
		zstd.WithDecoderMaxMemory(maxWindow),
		zstd.WithDecoderLowmem(true))
	if err != nil {
		return st, 0, fmt.Errorf("start zstd: %w", err)
	}
	limit := cfg.maxBytes + int64(cfg.maxFiles+1)*entryOverhead + manifestCap(cfg.maxFiles, int64(cfg.maxFiles)*maxNameLen)
	lr := &limitedReader{r: dec, left: limit, limit: limit}

	rd := reader{ctx: ictx, cfg: cfg, s: s, sr: sr, tr: tar.NewReader(lr), seen: map[string]*manifestEntry{},
		bufs: [2][]byte{make([]byte, bufSize), make([]byte, bufSize)}, h: newAsyncHash()}
	defer rd.h.close()
	m, err := rd.entries()
	if err != nil {
		return st, 0, err
	}
	if err := rd.verify(m); err != nil {
		return st, 0, err
	}
	// The zstd frame's checksum is checked at its end, and nothing may
	// follow it.
	if n, err := io.Copy(io.Discard, lr); err != nil {
		return st, 0, fmt.Errorf("after the archive: %w", rd.classify(err))
	} else if n > 0 {
		return st, 0, corruptf("%d bytes after the end of the archive", n)
	}
	st.Files, st.Bytes = rd.files, rd.bytes
	return st, m.Mode, nil
}

// reader holds one Read's progress through the tar stream.
type reader struct {
	ctx context.Context
	cfg readConfig
	s   *staging
	sr  *streamReader
	tr  *tar.Reader
	// bufs alternate: one is filled while h hashes the other.
	bufs [2][]byte
	h    *asyncHash

	order     []*manifestEntry
	seen      map[string]*manifestEntry
	nameBytes int64
	files     int
	bytes     int64
}

// entries receives every entry up to the manifest, and returns it.
func (rd *reader) entries() (manifest, error) {
	last := "the start"
	for {
		if err := rd.ctx.Err(); err != nil {
			return manifest{}, err
		}
		hdr, err := rd.tr.Next()
		if err == io.EOF {
			return manifest{}, corruptf("archive ends after %s without a manifest", last)
		}
		if err != nil {
			return manifest{}, fmt.Errorf("read the entry after %s: %w", last, rd.classify(err))
		}
		if hdr.Name == manifestName {
			return rd.manifest(hdr)
		}
		if err := rd.entry(hdr); err != nil {
			return manifest{}, err
		}
		last = fmt.Sprintf("%q", hdr.Name)
	}
}

func (rd *reader) entry(hdr *tar.Header) error {
	name := hdr.Name
	var typ string
	switch hdr.Typeflag {
	case tar.TypeReg:
		typ = typeFile
	case tar.TypeDir:
		typ = typeDir
		name = strings.TrimSuffix(name, "/")
	default:
		return corruptf("entry %q: tar type %q, only regular files and directories are allowed", hdr.Name, hdr.Typeflag)
	}
	if err := checkName(name); err != nil {
		return corruptf("entry: %v", err)
	}
	if len(rd.order) >= rd.cfg.maxFiles {
		return fmt.Errorf("%w: entry %q: more than %d entries", ErrLimit, name, rd.cfg.maxFiles)
	}
	if _, dup := rd.seen[name]; dup {
		return corruptf("entry %q appears twice", name)
	}
	if parent := path.Dir(name); parent != "." {
		if p := rd.seen[parent]; p == nil || p.Type != typeDir {
			return corruptf("entry %q: its directory %q is not an earlier entry", name, parent)
		}
	}
	if hdr.Mode&^0o777 != 0 {
		return corruptf("entry %q: mode %#o has bits other than permissions", name, hdr.Mode)
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return corruptf("entry %q: sparse files are not allowed", name)
		}
	}
	e := &manifestEntry{Name: name, Type: typ, Mode: uint32(hdr.Mode)}
	rd.seen[name] = e
	rd.order = append(rd.order, e)
	rd.nameBytes += int64(len(name))
	if typ == typeDir {
		if hdr.Size != 0 {
			return corruptf("directory %q has a size of %d", name, hdr.Size)
		}
		return rd.s.mkdir(name, fs.FileMode(hdr.Mode))
	}
	if hdr.Size < 0 || hdr.Size > rd.cfg.maxBytes-rd.bytes {
		return fmt.Errorf("%w: file %q of %d bytes would bring the total past %d bytes",
			ErrLimit, name, hdr.Size, rd.cfg.maxBytes)
	}
	sum, err := rd.file(name, hdr.Size, fs.FileMode(hdr.Mode))
	if err != nil {
		return fmt.Errorf("file %q: %w", name, err)
	}
	e.Size, e.SHA256 = hdr.Size, hex.EncodeToString(sum)
	rd.files++
	rd.bytes += hdr.Size
	return nil
}

func (rd *reader) manifest(hdr *tar.Header) (manifest, error) {
	if hdr.Typeflag != tar.TypeReg {
		return manifest{}, corruptf("manifest has tar type %q", hdr.Typeflag)
	}
	want, ok := hdr.PAXRecords[manifestDigestKey]
	if !ok {
		return manifest{}, corruptf("manifest header lacks its digest (%s)", manifestDigestKey)
	}
	if limit := manifestCap(len(rd.order), rd.nameBytes); hdr.Size < 0 || hdr.Size > limit {
		return manifest{}, corruptf("manifest of %d bytes, more than %d entries can need", hdr.Size, len(rd.order))
	}
	b := make([]byte, hdr.Size)
	if _, err := io.ReadFull(rd.tr, b); err != nil {
		return manifest{}, fmt.Errorf("read manifest: %w", rd.classify(err))
	}
	if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != want {
		return manifest{}, corruptf("manifest sha256 %x, its header says %s", got, want)
	}
	var m manifest
	dj := json.NewDecoder(bytes.NewReader(b))
	dj.DisallowUnknownFields()
	if err := dj.Decode(&m); err != nil {
		return manifest{}, corruptf("decode manifest: %v", err)
	}
	if dj.More() {
		return manifest{}, corruptf("data after the manifest's JSON")
	}
	if m.Version != manifestVersion {
		return manifest{}, corruptf("manifest version %d, this reader knows only %d", m.Version, manifestVersion)
	}
	if m.Mode&^0o777 != 0 {
		return manifest{}, corruptf("manifest: directory mode %#o has bits other than permissions", m.Mode)
	}
	if _, err := rd.tr.Next(); err != io.EOF {
		if err == nil {
			return manifest{}, corruptf("an entry follows the manifest")
		}
		return manifest{}, fmt.Errorf("after the manifest: %w", rd.classify(err))
	}
	return m, nil
}

// verify checks the entries received against the manifest, one for one
// and in order.
func (rd *reader) verify(m manifest) error {
	for i, want := range m.Entries {
		if i >= len(rd.order) {
			return corruptf("manifest lists %q, which is not in the archive", want.Name)
		}
		got := rd.order[i]
		if got.Name != want.Name {
			if _, ok := rd.seen[want.Name]; !ok {
				return corruptf("manifest lists %q, which is not in the archive", want.Name)
			}
			return corruptf("manifest lists %q where the archive has %q", want.Name, got.Name)
		}
		if got.Type != want.Type {
			return corruptf("%q is a %s, the manifest says a %s", got.Name, got.Type, want.Type)
		}
		if got.Mode != want.Mode {
			return corruptf("%q has mode %#o, the manifest says %#o", got.Name, got.Mode, want.Mode)
		}
		if got.Size != want.Size {
			return corruptf("%q has %d bytes, the manifest says %d", got.Name, got.Size, want.Size)
		}
		if got.SHA256 != want.SHA256 {
			return corruptf("%q has sha256 %s, the manifest says %s", got.Name, got.SHA256, want.SHA256)
		}
	}
	if len(rd.order) > len(m.Entries) {
		return corruptf("archive holds %q, which the manifest does not list", rd.order[len(m.Entries)].Name)
	}
	return nil
}

// file receives one file's data, hashing it as it goes.
func (rd *reader) file(name string, size int64, mode fs.FileMode) ([]byte, error) {
	f, err := rd.s.create(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	w := newWriteback(f)
	rd.h.reset()
	for i, left := 0, size; left > 0; i++ {
		if err := rd.ctx.Err(); err != nil {
			return nil, err
		}
		// Fill one buffer while the other is hashed.
		buf := rd.bufs[i%2]
		n, err := io.ReadFull(rd.tr, buf[:min(int64(len(buf)), left)])
		if err != nil {
			return nil, fmt.Errorf("after %d of %d bytes: %w", size-left, size, rd.classify(err))
		}
		rd.h.write(buf[:n])
		if err := w.write(buf[:n]); err != nil {
			return nil, err
		}
		left -= int64(n)
	}
	sum := rd.h.sum()
	if err := rd.s.finish(f, mode); err != nil {
		return nil, err
	}
	return sum, nil
}

func (rd *reader) classify(err error) error { return classify(rd.ctx, rd.sr, err) }

// classify tells a stream that is not a bundle (ErrCorrupt) from one the
// transport or ctx broke: the decompressed stream fails by itself only when
// its bytes are wrong or end too early.
func classify(ctx context.Context, sr *streamReader, err error) error {
	switch {
	case errors.Is(err, ErrCorrupt), errors.Is(err, ErrLimit), ctx.Err() != nil:
		return err
	case sr.err != nil:
		if errors.Is(err, sr.err) {
			return err
		}
		return fmt.Errorf("%w (stream: %w)", err, sr.err)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return fmt.Errorf("%w: stream truncated (%w)", ErrCorrupt, err)
	}
	return fmt.Errorf("%w: %w", ErrCorrupt, err)
}
