package bundle

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// hangGuard fails a test whose call does not return: cancellation must
// unblock it.
const hangGuard = 30 * time.Second

// cancelAfter calls cancel once n bytes went through: ctx ends between
// two chunks of a stream without deadlines.
type cancelAfter struct {
	r      io.Reader
	w      io.Writer
	n      int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.tick(n)
	return n, err
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.tick(n)
	return n, err
}

func (c *cancelAfter) tick(n int) {
	if c.n -= n; c.n <= 0 {
		c.cancel()
	}
}

func TestReadCancelledBetweenChunks(t *testing.T) {
	b := bundleBytes(t, dumpDir(t, 8<<20))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	parent := t.TempDir()
	r := &cancelAfter{r: bytes.NewReader(b), n: len(b) / 2, cancel: cancel}
	_, err := Read(ctx, r, filepath.Join(parent, "out"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("read: %v, want context.Canceled", err)
	}
	assertNothingLeft(t, parent)
}

func TestReadCancelledWhileBlocked(t *testing.T) {
	b := bundleBytes(t, dumpDir(t, 8<<20))
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	parent := t.TempDir()
	done := make(chan error, 1)
	go func() {
		_, err := Read(ctx, pr, filepath.Join(parent, "out"))
		done <- err
	}()
	// Half the stream, then the sender stalls with the pipe open: Read
	// blocks in read(2) until ctx ends.
	if _, err := pw.Write(b[:len(b)/2]); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("read: %v, want context.Canceled", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("read still blocked after cancel")
	}
	assertNothingLeft(t, parent)
}

func TestReadWithAnEndedContext(t *testing.T) {
	b := bundleBytes(t, dumpDir(t, 4096))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	parent := t.TempDir()
	if _, err := Read(ctx, bytes.NewReader(b), filepath.Join(parent, "out")); !errors.Is(err, context.Canceled) {
		t.Fatalf("read: %v, want context.Canceled", err)
	}
	assertNothingLeft(t, parent)
}

func TestWriteCancelledBetweenChunks(t *testing.T) {
	src := dumpDir(t, 8<<20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var b bytes.Buffer
	w := &cancelAfter{w: &b, n: 1 << 20, cancel: cancel}
	if _, err := Write(ctx, w, src); !errors.Is(err, context.Canceled) {
		t.Fatalf("write: %v, want context.Canceled", err)
	}
	// Not a whole bundle, and well short of one.
	if b.Len() > 3<<20 {
		t.Errorf("%d bytes written after cancelling at 1 MiB", b.Len())
	}
	readFails(t, b.Bytes(), ErrCorrupt, "")
}

func TestWriteCancelledWhileBlocked(t *testing.T) {
	src := dumpDir(t, 8<<20)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Write(ctx, pw, src)
		done <- err
	}()
	// Nobody reads: once the pipe is full, Write blocks in write(2).
	first := make([]byte, 1)
	if _, err := io.ReadFull(pr, first); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("write: %v, want context.Canceled", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("write still blocked after cancel")
	}
}

// createAfter makes dir, as a rival would, once n bytes were read.
type createAfter struct {
	r   io.Reader
	n   int
	dir string
	err error
}

func (c *createAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n -= n; c.n <= 0 && c.err == nil {
		c.err = os.Mkdir(c.dir, 0o755)
		if c.err == nil {
			c.err = errors.New("created")
		}
	}
	return n, err
}

// A directory that appears at the final path during the transfer is not
// replaced, even empty (a plain rename would replace it).
func TestReadDoesNotReplaceADirMadeMeanwhile(t *testing.T) {
	b := bundleBytes(t, dumpDir(t, 1<<20))
	parent := t.TempDir()
	dst := filepath.Join(parent, "out")
	r := &createAfter{r: bytes.NewReader(b), n: 100, dir: dst}
	_, err := Read(context.Background(), r, dst)
	if r.err == nil || r.err.Error() != "created" {
		t.Fatalf("rival mkdir: %v", r.err)
	}
	if err == nil || !errors.Is(err, os.ErrExist) {
		t.Fatalf("read: %v, want an error wrapping os.ErrExist", err)
	}
	assertNothingLeft(t, parent, "out")
	if names := listDir(t, dst); len(names) != 0 {
		t.Errorf("the rival's dir now holds %q", names)
	}
}

// A bad stream is refused at once even if its sender then stalls with the
// stream open: Read does not wait for the sender to go on or hang up.
func TestReadFailsPromptlyWhileTheSenderStalls(t *testing.T) {
	c := newCrafter(t)
	c.file("../evil", []byte("x"))
	c.manifest()
	b := c.bundle()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	if _, err := pw.Write(b); err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	done := make(chan error, 1)
	go func() {
		_, err := Read(context.Background(), pr, filepath.Join(parent, "out"))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("read: %v, want ErrCorrupt", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("read still waiting for a stalled sender after a bad entry")
	}
	assertNothingLeft(t, parent)
}

// stallWriter takes its first writes, then blocks until its deadline is
// set, as a receiver that stopped reading. Its first write calls onFirst.
type stallWriter struct {
	accept   int // writes taken before stalling
	onFirst  func()
	writes   int
	deadline chan struct{}
	once     sync.Once
}

func (s *stallWriter) Write(p []byte) (int, error) {
	if s.writes++; s.writes == 1 {
		s.onFirst()
	}
	if s.writes <= s.accept {
		return len(p), nil
	}
	<-s.deadline
	return 0, os.ErrDeadlineExceeded
}

func (s *stallWriter) SetWriteDeadline(time.Time) error {
	s.once.Do(func() { close(s.deadline) })
	return nil
}

// Likewise Write fails at once on a file that became a symlink since it
// was listed, even while a write of what came before is blocked.
//
// The geometry makes that block certain. Random pages make raw zstd
// blocks of 64 KiB + 3 bytes, after 18 bytes of bundle and frame headers,
// and Write's 1 MiB buffer flushes at each MiB of output: block 31's output
// crosses the second MiB, so its write is the one that stalls. a.img ends
// inside block 33, so by the time Write meets b.img it has handed blocks up
// to 32 to the encoder. Either the stall comes first, and the clean-up
// must end it; or the error comes first, and the clean-up must not send
// block 31 (it would stall): the receiver then sees a single write.
func TestWriteFailsPromptlyWhileTheReceiverStalls(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	pagesFile(t, filepath.Join(src, "a.img"), 2<<20+96<<10, 0, 5)
	putFile(t, filepath.Join(src, "b.img"), []byte("b"), 0o644)
	w := &stallWriter{accept: 1, deadline: make(chan struct{}), onFirst: func() {
		// Listed already: sending has begun.
		if err := os.Remove(filepath.Join(src, "b.img")); err != nil {
			t.Error(err)
		}
		if err := os.Symlink("a.img", filepath.Join(src, "b.img")); err != nil {
			t.Error(err)
		}
	}}
	done := make(chan error, 1)
	go func() {
		_, err := Write(context.Background(), w, src)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "b.img: replaced since it was listed") {
			t.Fatalf("write: %v, want b.img refused", err)
		}
		if w.writes < w.accept {
			t.Errorf("%d writes: the symlink was never made", w.writes)
		}
	case <-time.After(hangGuard):
		t.Fatal("write still waiting for a stalled receiver after an error")
	}
}
