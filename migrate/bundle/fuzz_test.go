package bundle

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
)

const (
	fuzzMaxBytes = 1 << 20
	fuzzMaxFiles = 32
)

// readFuzzed reads b into a fresh directory with small limits and checks
// what any input must give: no panic; on error, a classified error and
// nothing left; on success, a directory within the limits and nothing else.
func readFuzzed(t *testing.T, b []byte) {
	parent := t.TempDir()
	dst := filepath.Join(parent, "out")
	st, err := Read(context.Background(), bytes.NewReader(b), dst,
		WithMaxBytes(fuzzMaxBytes), WithMaxFiles(fuzzMaxFiles))
	if err != nil {
		// The stream is in memory: no transport can fail, so every
		// error is the input's fault, and must say so.
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrLimit) {
			t.Errorf("unclassified error: %v", err)
		}
		assertNothingLeft(t, parent)
		return
	}
	assertNothingLeft(t, parent, "out")
	entries := tree(t, dst)
	var files int
	var size int64
	for name, e := range entries {
		if name == "." {
			continue
		}
		if e.mode.IsRegular() {
			files++
			size += e.size
		} else if !e.mode.IsDir() {
			t.Errorf("%s has mode %v", name, e.mode)
		}
	}
	if len(entries)-1 > fuzzMaxFiles || size > fuzzMaxBytes {
		t.Errorf("accepted %d entries of %d bytes, past the limits", len(entries)-1, size)
	}
	if st.Files != files || st.Bytes != size {
		t.Errorf("stats say %d files of %d bytes, the directory holds %d of %d", st.Files, st.Bytes, files, size)
	}
}

// fuzzSeeds are small bundles, whole and crafted to fail: small, because
// the fuzzer minimizes every new input it finds, at a millisecond a try.
func fuzzSeeds(f *testing.F) [][]byte {
	src := filepath.Join(f.TempDir(), "src")
	putFile(f, filepath.Join(src, "inventory.img"), []byte("inventory"), 0o600)
	putFile(f, filepath.Join(src, "sub", "pages-1.img"), append(make([]byte, 64), "pages"...), 0o644)
	seeds := [][]byte{bundleBytes(f, src), bundleBytes(f, src, WithLevel(LevelBest)), header(), nil}
	c := newCrafter(f)
	c.dir("d")
	c.file("d/x", []byte("data"))
	c.file("y", nil)
	c.manifest()
	seeds = append(seeds, c.bundle())
	c = newCrafter(f)
	c.file("../x", []byte("data"))
	c.manifest()
	return append(seeds, c.bundle())
}

// FuzzRead feeds Read arbitrary streams. Run it with a short minimization,
// or the fuzzer spends its time minimizing (an execution takes about a
// millisecond: a staging directory, fsyncs):
//
//	go test -run '^$' -fuzz '^FuzzRead$' -fuzztime 60s -fuzzminimizetime 10x ./migrate/bundle/
func FuzzRead(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(readFuzzed)
}

// FuzzReadArchive feeds Read arbitrary tar streams in a valid header and
// zstd frame: mutations of compressed bytes rarely get past zstd's
// checksum, and this reaches the checks behind it.
func FuzzReadArchive(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		if len(s) > headerLen {
			f.Add(unwrap(f, s))
		}
	}
	f.Fuzz(func(t *testing.T, plain []byte) {
		readFuzzed(t, wrap(t, plain))
	})
}
