package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

const pageSize = 4096

// pagesFile writes size bytes of pages, each a zero page with probability
// zeroShare and random otherwise, as a CRIU pages image mostly is.
func pagesFile(t testing.TB, path string, size int64, zeroShare float64, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, pageSize)
	zero := make([]byte, pageSize)
	for off := int64(0); off < size; off += pageSize {
		p := zero
		if rng.Float64() >= zeroShare {
			for i := 0; i < pageSize; i += 8 {
				v := rng.Uint64()
				for j := range 8 {
					page[i+j] = byte(v >> (8 * j))
				}
			}
			p = page
		}
		if _, err := f.Write(p[:min(int64(pageSize), size-off)]); err != nil {
			t.Fatal(err)
		}
	}
}

func putFile(t testing.TB, path string, data []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// dumpDir makes a directory shaped like a CRIU dump: small images, a
// pages image of pagesSize bytes (half zero pages), a nested directory, an
// empty file and an empty directory, with several modes.
func dumpDir(t testing.TB, pagesSize int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "dump")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	putFile(t, filepath.Join(dir, "inventory.img"), []byte("\x54\x56\x01\x00inventory"), 0o600)
	putFile(t, filepath.Join(dir, "pstree.img"), bytes.Repeat([]byte("pstree "), 100), 0o644)
	putFile(t, filepath.Join(dir, "core-1.img"), bytes.Repeat([]byte{1, 2, 3, 4, 0, 0, 0, 9}, 2000), 0o600)
	putFile(t, filepath.Join(dir, "mm-1.img"), nil, 0o400)
	putFile(t, filepath.Join(dir, "sub", "deeper", "tmpfs-dev-7.tar.gz.img"), bytes.Repeat([]byte("tmpfs"), 3000), 0o640)
	putFile(t, filepath.Join(dir, "sub", "rootfs-diff.tar"), []byte("diff"), 0o644)
	// The manifest's name is reserved at the top only.
	putFile(t, filepath.Join(dir, "sub", manifestName), []byte("{}"), 0o644)
	if err := os.Chmod(filepath.Join(dir, "sub"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	pagesFile(t, filepath.Join(dir, "pages-1.img"), pagesSize, 0.5, 1)
	return dir
}

type treeEntry struct {
	mode fs.FileMode
	size int64
	sum  string
}

// tree lists a directory: every entry's type and mode, size and digest.
func tree(t testing.TB, dir string) map[string]treeEntry {
	t.Helper()
	out := map[string]treeEntry{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := treeEntry{mode: info.Mode()}
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			e.size, e.sum = int64(len(b)), hex.EncodeToString(s[:])
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t testing.TB, want, got string) {
	t.Helper()
	w, g := tree(t, want), tree(t, got)
	for name, we := range w {
		ge, ok := g[name]
		if !ok {
			t.Errorf("%s missing from the copy", name)
			continue
		}
		if ge != we {
			t.Errorf("%s: copy has %+v, source %+v", name, ge, we)
		}
	}
	for name := range g {
		if _, ok := w[name]; !ok {
			t.Errorf("%s in the copy, not in the source", name)
		}
	}
}

// listDir names what a directory holds.
func listDir(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// assertNothingLeft checks that a failed Read left its parent directory
// as it found it: holding exactly before.
func assertNothingLeft(t testing.TB, parent string, before ...string) {
	t.Helper()
	got := listDir(t, parent)
	slices.Sort(got)
	slices.Sort(before)
	if !slices.Equal(got, before) {
		t.Errorf("after a failed read, %s holds %q, want %q", parent, got, before)
	}
}

// bundleBytes writes dir as a bundle into memory.
func bundleBytes(t testing.TB, dir string, opts ...WriteOption) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := Write(context.Background(), &b, dir, opts...); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// unwrap and wrap take a bundle apart into its tar stream and put one
// together again, with a valid header and zstd checksum: to tamper with the
// layer that zstd's checksum does not guard.
func unwrap(t testing.TB, b []byte) []byte {
	t.Helper()
	dec, err := zstd.NewReader(bytes.NewReader(b[headerLen:]))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	out, err := io.ReadAll(dec)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func wrap(t testing.TB, tarStream []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	b.Write(header())
	enc, err := zstd.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Write(tarStream); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// crafter builds bundles entry by entry, keeping a manifest that matches
// unless a test changes it.
type crafter struct {
	t   testing.TB
	buf bytes.Buffer
	tw  *tar.Writer
	m   manifest
}

func newCrafter(t testing.TB) *crafter {
	c := &crafter{t: t, m: manifest{Version: manifestVersion, Mode: 0o755}}
	c.tw = tar.NewWriter(&c.buf)
	return c
}

func (c *crafter) header(h *tar.Header, data []byte) {
	c.t.Helper()
	if err := c.tw.WriteHeader(h); err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.tw.Write(data); err != nil {
		c.t.Fatal(err)
	}
}

func (c *crafter) file(name string, data []byte) {
	c.header(tarHeader(tar.TypeReg, name, 0o644, int64(len(data))), data)
	s := sha256.Sum256(data)
	c.m.Entries = append(c.m.Entries, manifestEntry{Name: name, Type: typeFile, Mode: 0o644,
		Size: int64(len(data)), SHA256: hex.EncodeToString(s[:])})
}

func (c *crafter) dir(name string) {
	c.header(tarHeader(tar.TypeDir, name+"/", 0o755, 0), nil)
	c.m.Entries = append(c.m.Entries, manifestEntry{Name: name, Type: typeDir, Mode: 0o755})
}

// rawManifest adds b as the manifest, with digest as its header says.
func (c *crafter) rawManifest(b []byte, digest string) {
	h := tarHeader(tar.TypeReg, manifestName, 0o644, int64(len(b)))
	h.PAXRecords = map[string]string{manifestDigestKey: digest}
	c.header(h, b)
}

func (c *crafter) manifest() {
	c.t.Helper()
	b, err := json.Marshal(c.m)
	if err != nil {
		c.t.Fatal(err)
	}
	s := sha256.Sum256(b)
	c.rawManifest(b, hex.EncodeToString(s[:]))
}

// bundle ends the archive and wraps it.
func (c *crafter) bundle() []byte {
	c.t.Helper()
	if err := c.tw.Close(); err != nil {
		c.t.Fatal(err)
	}
	return wrap(c.t, c.buf.Bytes())
}

// readFails reads b into a fresh directory and checks that Read fails with
// an error wrapping target (if any) and saying want, and leaves nothing.
func readFails(t *testing.T, b []byte, target error, want string, opts ...ReadOption) {
	t.Helper()
	parent := t.TempDir()
	dst := filepath.Join(parent, "out")
	_, err := Read(context.Background(), bytes.NewReader(b), dst, opts...)
	if err == nil {
		t.Fatalf("read succeeded, want an error saying %q", want)
	}
	if target != nil && !errors.Is(err, target) {
		t.Errorf("error %q does not wrap %v", err, target)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	assertNothingLeft(t, parent)
}

// tcpPair connects two ends over loopback.
func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		var err error
		server, err = ln.AcceptTCP()
		done <- err
	}()
	client, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return client, server
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
