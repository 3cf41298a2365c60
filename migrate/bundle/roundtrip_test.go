package bundle

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const pages64M = 64 << 20

// roundTrip sends src through the two ends of a stream, Write on one
// goroutine and Read on this one, and checks the copy and the stats.
func roundTrip(t *testing.T, src string, send interface {
	Write([]byte) (int, error)
}, closeSend func() error, recv interface{ Read([]byte) (int, error) }) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	type result struct {
		st  Stats
		err error
	}
	wrote := make(chan result, 1)
	go func() {
		st, err := Write(context.Background(), send, src)
		if cerr := closeSend(); err == nil {
			err = cerr
		}
		wrote <- result{st, err}
	}()
	rst, rerr := Read(context.Background(), recv, dst)
	w := <-wrote
	if w.err != nil {
		t.Fatalf("write: %v", w.err)
	}
	if rerr != nil {
		t.Fatalf("read: %v", rerr)
	}
	sameTree(t, src, dst)
	if w.st.Files != 8 || rst.Files != 8 {
		t.Errorf("files: wrote %d, read %d, want 8", w.st.Files, rst.Files)
	}
	var want int64
	for _, e := range tree(t, src) {
		want += e.size
	}
	if w.st.Bytes != want || rst.Bytes != want {
		t.Errorf("bytes: wrote %d, read %d, want %d", w.st.Bytes, rst.Bytes, want)
	}
	if w.st.Wire != rst.Wire {
		t.Errorf("wire: wrote %d, read %d", w.st.Wire, rst.Wire)
	}
	// Half the pages are zero: the stream must be about half the size.
	if rst.Wire > want*6/10 || rst.Wire < want*4/10 {
		t.Errorf("wire %d bytes for %d, want about half", rst.Wire, want)
	}
	if w.st.Took <= 0 || rst.Took <= 0 {
		t.Errorf("took: wrote %v, read %v", w.st.Took, rst.Took)
	}
	if names := listDir(t, filepath.Dir(dst)); len(names) != 1 {
		t.Errorf("beside the copy: %q, want only it", names)
	}
}

func TestRoundTripPipe(t *testing.T) {
	src := dumpDir(t, pages64M)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	roundTrip(t, src, pw, pw.Close, pr)
}

func TestRoundTripTCP(t *testing.T) {
	src := dumpDir(t, pages64M)
	client, server := tcpPair(t)
	defer client.Close()
	defer server.Close()
	roundTrip(t, src, client, client.CloseWrite, server)
}

func TestRoundTripEveryLevel(t *testing.T) {
	src := dumpDir(t, 4<<20)
	for _, l := range []Level{LevelFastest, LevelDefault, LevelBetter, LevelBest} {
		t.Run(l.String(), func(t *testing.T) {
			b := bundleBytes(t, src, WithLevel(l))
			dst := filepath.Join(t.TempDir(), "copy")
			if _, err := Read(context.Background(), bytes.NewReader(b), dst); err != nil {
				t.Fatal(err)
			}
			sameTree(t, src, dst)
		})
	}
}

// The same directory always makes the same bytes: nothing but names,
// contents and modes travels.
func TestWriteIsDeterministic(t *testing.T) {
	src := dumpDir(t, 1<<20)
	a := bundleBytes(t, src)
	if err := os.Chtimes(filepath.Join(src, "pstree.img"), time.Unix(12345, 0), time.Unix(12345, 0)); err != nil {
		t.Fatal(err)
	}
	if b := bundleBytes(t, src); !bytes.Equal(a, b) {
		t.Error("two writes of the same directory differ")
	}
}

func TestUnknownLevelIsRefused(t *testing.T) {
	src := dumpDir(t, 4096)
	var b bytes.Buffer
	if _, err := Write(context.Background(), &b, src, WithLevel(Level(42))); err == nil {
		t.Fatal("level 42 accepted")
	}
	if b.Len() != 0 {
		t.Errorf("%d bytes sent before refusing the level", b.Len())
	}
}

// A failed transfer is restarted by reading again into the same path.
func TestReadAgainAfterAFailure(t *testing.T) {
	src := dumpDir(t, 1<<20)
	b := bundleBytes(t, src)
	parent := t.TempDir()
	dst := filepath.Join(parent, "copy")
	if _, err := Read(context.Background(), bytes.NewReader(b[:len(b)/2]), dst); err == nil {
		t.Fatal("a truncated stream was accepted")
	}
	assertNothingLeft(t, parent)
	if _, err := Read(context.Background(), bytes.NewReader(b), dst); err != nil {
		t.Fatalf("second read: %v", err)
	}
	sameTree(t, src, dst)
}

func TestReadRefusesAnExistingDir(t *testing.T) {
	src := dumpDir(t, 4096)
	b := bundleBytes(t, src)
	parent := t.TempDir()
	dst := filepath.Join(parent, "copy")
	if err := os.Mkdir(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	r := bytes.NewReader(b)
	_, err := Read(context.Background(), r, dst)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("already exists")) {
		t.Fatalf("read into an existing dir: %v", err)
	}
	if r.Len() != len(b) {
		t.Errorf("read %d bytes of the stream before refusing", len(b)-r.Len())
	}
	assertNothingLeft(t, parent, "copy")
}
