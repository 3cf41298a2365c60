package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

func TestTruncatedStreamIsRefused(t *testing.T) {
	src := dumpDir(t, 1<<20)
	b := bundleBytes(t, src)
	for _, n := range []int{0, 1, headerLen - 1, headerLen, headerLen + 3, headerLen + 100,
		len(b) / 3, len(b) / 2, len(b) - 600, len(b) - 100, len(b) - 5, len(b) - 4, len(b) - 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			readFails(t, b[:n], ErrCorrupt, "")
		})
	}
}

// A flipped byte is caught in the header, in the files' compressed data,
// in the compressed manifest at the end, in zstd's checksum. A few bits of
// a zstd stream do not change what it decodes to (padding of a bitstream,
// for one): a flip there must give exactly the source.
func TestFlippedByteIsRefused(t *testing.T) {
	src := dumpDir(t, 1<<20)
	b := bundleBytes(t, src)
	plain := unwrap(t, b)
	offsets := []int{0, 7, 8, 11, headerLen, headerLen + 5, headerLen + 200}
	for i := 1; i < 8; i++ {
		offsets = append(offsets, len(b)*i/8)
	}
	// The manifest is the last entry: its compressed bytes are the last
	// few hundred, before the 4-byte checksum.
	for back := 400; back > 0; back -= 7 {
		offsets = append(offsets, len(b)-back)
	}
	offsets = append(offsets, len(b)-4, len(b)-3, len(b)-2, len(b)-1)
	harmless := 0
	for _, off := range offsets {
		t.Run(fmt.Sprint(off), func(t *testing.T) {
			c := bytes.Clone(b)
			c[off] ^= 0x20
			parent := t.TempDir()
			dst := filepath.Join(parent, "out")
			if _, err := Read(context.Background(), bytes.NewReader(c), dst); err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("error %q does not wrap ErrCorrupt", err)
				}
				assertNothingLeft(t, parent)
				return
			}
			harmless++
			if !bytes.Equal(unwrap(t, c), plain) {
				t.Errorf("flip at %d accepted, and it changes the archive", off)
			}
			sameTree(t, src, dst)
		})
	}
	if harmless > len(offsets)/10 {
		t.Errorf("%d of %d flips accepted", harmless, len(offsets))
	}
}

// Tampering under zstd, with a valid zstd checksum: the manifest's digests
// catch what zstd does not.
func TestTamperedArchiveIsRefused(t *testing.T) {
	src := dumpDir(t, 64<<10)
	plain := unwrap(t, bundleBytes(t, src))
	manifestAt := bytes.Index(plain, []byte(`{"version":1`))
	pagesAt := bytes.Index(plain, []byte("pstree pstree"))
	if manifestAt < 0 || pagesAt < 0 {
		t.Fatal("cannot find the manifest or pstree.img in the archive")
	}
	cases := map[string]struct {
		at   int
		want string
	}{
		"file data":     {pagesAt + 10, `"pstree.img" has sha256`},
		"manifest body": {manifestAt + 40, "manifest sha256"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			p := bytes.Clone(plain)
			p[c.at] ^= 0x01
			readFails(t, wrap(t, p), ErrCorrupt, c.want)
		})
	}
	t.Run("trailing zstd data", func(t *testing.T) {
		readFails(t, wrap(t, append(bytes.Clone(plain), 0)), ErrCorrupt, "after the end of the archive")
	})
}

func TestCraftedBundlesAreRefused(t *testing.T) {
	data := []byte("some image bytes")
	cases := []struct {
		name  string
		build func(c *crafter)
		want  string
	}{
		{"parent traversal", func(c *crafter) { c.file("../evil", data); c.manifest() }, "escapes the directory"},
		{"deep traversal", func(c *crafter) { c.dir("a"); c.file("a/../../evil", data); c.manifest() }, "not clean"},
		{"absolute name", func(c *crafter) { c.file("/tmp/escape-evil", data); c.manifest() }, "absolute name"},
		{"dot name", func(c *crafter) { c.file("./x", data); c.manifest() }, "not clean"},
		{"duplicate file", func(c *crafter) { c.file("x", data); c.file("x", data); c.manifest() }, `"x" appears twice`},
		{"file then dir of the same name", func(c *crafter) { c.file("x", data); c.dir("x"); c.manifest() }, `"x" appears twice`},
		{"entry under a file", func(c *crafter) { c.file("x", data); c.file("x/y", data); c.manifest() }, `directory "x" is not an earlier entry`},
		{"undeclared parent", func(c *crafter) { c.file("a/b", data); c.manifest() }, `directory "a" is not an earlier entry`},
		{"symlink entry", func(c *crafter) {
			c.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: "/etc/passwd"}, nil)
			c.manifest()
		}, "only regular files and directories"},
		{"hard link entry", func(c *crafter) {
			c.file("x", data)
			c.header(&tar.Header{Typeflag: tar.TypeLink, Name: "l", Linkname: "x"}, nil)
			c.manifest()
		}, "only regular files and directories"},
		{"device entry", func(c *crafter) {
			c.header(&tar.Header{Typeflag: tar.TypeChar, Name: "null", Devmajor: 1, Devminor: 3, Mode: 0o666}, nil)
			c.manifest()
		}, "only regular files and directories"},
		{"setuid mode", func(c *crafter) {
			c.header(&tar.Header{Typeflag: tar.TypeReg, Name: "su", Mode: 0o4755, Size: 1}, []byte{1})
			c.manifest()
		}, "bits other than permissions"},
		{"no manifest", func(c *crafter) { c.file("x", data) }, "without a manifest"},
		{"empty archive", func(c *crafter) {}, "without a manifest"},
		{"entry after the manifest", func(c *crafter) { c.file("x", data); c.manifest(); c.file("y", data) }, "follows the manifest"},
		{"manifest without digest", func(c *crafter) {
			c.file("x", data)
			b, _ := json.Marshal(c.m)
			c.header(tarHeader(tar.TypeReg, manifestName, 0o644, int64(len(b))), b)
		}, "lacks its digest"},
		{"manifest with a wrong digest", func(c *crafter) {
			c.file("x", data)
			b, _ := json.Marshal(c.m)
			c.rawManifest(b, strings.Repeat("ab", 32))
		}, "manifest sha256"},
		{"wrong file digest", func(c *crafter) {
			c.file("x", data)
			c.m.Entries[0].SHA256 = strings.Repeat("00", 32)
			c.manifest()
		}, `"x" has sha256`},
		{"wrong size", func(c *crafter) { c.file("x", data); c.m.Entries[0].Size++; c.manifest() }, `"x" has 16 bytes, the manifest says 17`},
		{"wrong mode", func(c *crafter) { c.file("x", data); c.m.Entries[0].Mode = 0o600; c.manifest() }, `"x" has mode 0644`},
		{"wrong type", func(c *crafter) { c.dir("d"); c.m.Entries[0].Type = typeFile; c.manifest() }, `"d" is a dir`},
		{"missing file", func(c *crafter) {
			c.file("x", data)
			c.m.Entries = append(c.m.Entries, manifestEntry{Name: "y", Type: typeFile, Mode: 0o644})
			c.manifest()
		}, `manifest lists "y", which is not in the archive`},
		{"extra file", func(c *crafter) {
			c.file("x", data)
			c.file("y", data)
			c.m.Entries = c.m.Entries[:1]
			c.manifest()
		}, `archive holds "y", which the manifest does not list`},
		{"reordered manifest", func(c *crafter) {
			c.file("x", data)
			c.file("y", data)
			c.m.Entries[0], c.m.Entries[1] = c.m.Entries[1], c.m.Entries[0]
			c.manifest()
		}, `manifest lists "y" where the archive has "x"`},
		{"manifest not JSON", func(c *crafter) { c.rawManifest([]byte("garbage"), sha("garbage")) }, "decode manifest"},
		{"manifest with unknown field", func(c *crafter) {
			b := `{"version":1,"mode":493,"entries":[],"extra":1}`
			c.rawManifest([]byte(b), sha(b))
		}, "unknown field"},
		{"manifest from the future", func(c *crafter) { c.m.Version = 2; c.manifest() }, "manifest version 2"},
		{"manifest too large", func(c *crafter) {
			b := `{"version":1,"mode":493,"entries":[]}` + strings.Repeat(" ", 8000)
			c.rawManifest([]byte(b), sha(b))
		}, "more than 0 entries can need"},
		{"global PAX header", func(c *crafter) {
			c.header(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", PAXRecords: map[string]string{"comment": "x"}}, nil)
			c.manifest()
		}, "only regular files and directories"},
		{"reserved name as a directory", func(c *crafter) {
			c.header(tarHeader(tar.TypeDir, manifestName+"/", 0o755, 0), nil)
		}, "reserved for the manifest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCrafter(t)
			tc.build(c)
			readFails(t, c.bundle(), ErrCorrupt, tc.want)
		})
	}
}

func TestLimitsAreEnforced(t *testing.T) {
	t.Run("too many files", func(t *testing.T) {
		c := newCrafter(t)
		for i := range 11 {
			c.file(fmt.Sprintf("f%02d", i), []byte{byte(i)})
		}
		c.manifest()
		readFails(t, c.bundle(), ErrLimit, "more than 10 entries", WithMaxFiles(10))
	})
	t.Run("too many bytes", func(t *testing.T) {
		src := dumpDir(t, 1<<20)
		readFails(t, bundleBytes(t, src), ErrLimit, "would bring the total past 1048576 bytes", WithMaxBytes(1<<20))
	})
	t.Run("decompressed stream too long", func(t *testing.T) {
		// A chain of PAX headers is read by one tar Next: without a bound
		// on the whole decompressed stream, a small bomb keeps it busy.
		var one bytes.Buffer
		tw := tar.NewWriter(&one)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "x", Mode: 0o644,
			PAXRecords: map[string]string{"comment": strings.Repeat("z", 500<<10)}}); err != nil {
			t.Fatal(err)
		}
		if err := tw.Flush(); err != nil {
			t.Fatal(err)
		}
		pax, file := one.Bytes()[:one.Len()-512], one.Bytes()[one.Len()-512:]
		plain := append(bytes.Repeat(pax, 100), file...)
		readFails(t, wrap(t, plain), ErrLimit, "decompressed stream longer than", WithMaxBytes(0), WithMaxFiles(1))
	})
	t.Run("bad options", func(t *testing.T) {
		readFails(t, nil, nil, "must not be negative", WithMaxBytes(-1))
		readFails(t, nil, nil, "must not be negative", WithMaxFiles(-1))
	})
}

func sha(s string) string {
	b := sha256Hex([]byte(s))
	return b
}
