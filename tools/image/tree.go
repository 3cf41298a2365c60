package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// entry is one file of an image layer. Exactly one of src, data, link or
// dir says what it is.
type entry struct {
	// src is a file on the build machine whose bytes are copied.
	src  string
	data []byte
	link string
	dir  bool
	// mode is the permission bits; 0 picks 0755 for directories and
	// executables, 0644 for other files.
	mode     fs.FileMode
	uid, gid int
}

// tree is the content of one layer, by absolute path inside the image.
// Parent directories are added (root-owned, 0755) unless listed.
type tree map[string]entry

func (t tree) file(dst, src string)                        { t[clean(dst)] = entry{src: src} }
func (t tree) content(dst string, b []byte, m fs.FileMode) { t[clean(dst)] = entry{data: b, mode: m} }
func (t tree) symlink(dst, target string)                  { t[clean(dst)] = entry{link: target} }
func (t tree) mkdir(dst string, m fs.FileMode, uid, gid int) {
	t[clean(dst)] = entry{dir: true, mode: m, uid: uid, gid: gid}
}

func clean(p string) string { return path.Clean("/" + p) }

// copyTree adds every file below the machine's directory src at the same
// relative path below dst, keeping symlinks as symlinks.
func (t tree) copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := path.Join(dst, filepath.ToSlash(rel))
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			t.symlink(to, target)
		case d.IsDir():
			t.mkdir(to, 0o755, 0, 0)
		case d.Type().IsRegular():
			t.file(to, p)
		default:
			return fmt.Errorf("%s: neither a file, a directory nor a symlink (%s)", p, d.Type())
		}
		return nil
	})
}

// withParents returns t's paths and the directories above them, sorted,
// so that a tar lists every directory before what it holds.
func (t tree) withParents() []string {
	all := map[string]bool{}
	for p := range t {
		for q := p; q != "/"; q = path.Dir(q) {
			all[q] = true
		}
	}
	out := make([]string, 0, len(all))
	for p := range all {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// pack writes t as an uncompressed tar: entries sorted by path, every
// time epoch, owners and modes as listed (no build machine's owner, mode
// or time leaks in), no user or group names.
func (t tree) pack(epoch time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range t.withParents() {
		e, listed := t[p]
		if !listed {
			e = entry{dir: true}
		}
		hdr := &tar.Header{Name: strings.TrimPrefix(p, "/"), ModTime: epoch, Uid: e.uid, Gid: e.gid, Format: tar.FormatPAX}
		var body []byte
		switch {
		case e.dir:
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, hdr.Name+"/", int64(orDefault(e.mode, 0o755))
		case e.link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, e.link, 0o777
		default:
			b, mode, err := e.bytes()
			if err != nil {
				return nil, err
			}
			body = b
			hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeReg, int64(len(b)), int64(mode)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar %s: %w", p, err)
		}
		if _, err := tw.Write(body); err != nil {
			return nil, fmt.Errorf("tar %s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// bytes is a file entry's content and mode: an executable source stays
// executable (0755), anything else is 0644, unless a mode is set.
func (e entry) bytes() ([]byte, fs.FileMode, error) {
	if e.src == "" {
		return e.data, orDefault(e.mode, 0o644), nil
	}
	b, err := os.ReadFile(e.src) // follows a symlink: the image gets the file
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", e.src, err)
	}
	if e.mode != 0 {
		return b, e.mode, nil
	}
	st, err := os.Stat(e.src)
	if err != nil {
		return nil, 0, err
	}
	if st.Mode()&0o111 != 0 {
		return b, 0o755, nil
	}
	return b, 0o644, nil
}

func orDefault(m, def fs.FileMode) fs.FileMode {
	if m == 0 {
		return def
	}
	return m
}

// layer packs t as a gzip-compressed OCI layer. The standard library's
// gzip writes no name and no time in its header, so the same tar gives
// the same compressed bytes.
func (t tree) layer(epoch time.Time) (v1.Layer, error) {
	tb, err := t.pack(epoch)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tb)), nil },
		tarball.WithMediaType(types.OCILayer))
}
