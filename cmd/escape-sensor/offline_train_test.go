package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/bags/trace"
)

func runTrain(args ...string) (string, error) {
	c := newTrainCmd()
	var out bytes.Buffer
	c.SetOut(&out)
	c.SetErr(&out)
	c.SetArgs(args)
	err := c.ExecuteContext(context.Background())
	return out.String(), err
}

// straceLines writes n strace lines of a few calls (several prefetch blocks'
// worth when n is large), with garbage at line bad (0: none).
func straceLines(t *testing.T, n, bad int) string {
	t.Helper()
	calls := []string{"read(3, \"x\", 1) = 1", "openat(AT_FDCWD, \"/etc/hosts\", O_RDONLY) = 3", "close(3) = 0", "mmap(NULL, 8192) = 0x7f", "write(1, \"y\", 1) = 1"}
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if i == bad {
			b.WriteString("4242  this is not strace output\n")
			continue
		}
		fmt.Fprintf(&b, "%d  %s\n", 4000+i%3, calls[(i*i)%len(calls)])
	}
	p := filepath.Join(t.TempDir(), "trace.strace")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTrainStrace runs the train command on strace text through the
// prefetching feed: a clean trace trains the windows it holds, garbage far
// past the first prefetch block is refused with its line number, and
// --lenient skips exactly that line.
func TestTrainStrace(t *testing.T) {
	const n = 50_000
	out := filepath.Join(t.TempDir(), "p.bosc")
	if msg, err := runTrain("--format", "strace", "-o", out, straceLines(t, n, 0)); err != nil {
		t.Fatalf("clean trace: %v: %s", err, msg)
	}
	p, err := bags.LoadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.TrainedWindows != n-bags.DefaultWindow+1 {
		t.Fatalf("trained %d windows, want %d", s.TrainedWindows, n-bags.DefaultWindow+1)
	}

	const bad = 41_234
	_, err = runTrain("--format", "strace", "-o", out, straceLines(t, n, bad))
	if !errors.Is(err, trace.ErrSyntax) || !strings.Contains(err.Error(), fmt.Sprintf("line %d:", bad)) {
		t.Fatalf("garbage at line %d: %v", bad, err)
	}
	if msg, err := runTrain("--format", "strace", "--lenient", "-o", out, straceLines(t, n, bad)); err != nil {
		t.Fatalf("lenient: %v: %s", err, msg)
	}
	if p, err = bags.LoadFile(out); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.TrainedWindows != n-1-bags.DefaultWindow+1 {
		t.Fatalf("lenient: trained %d windows, want %d (one line skipped)", s.TrainedWindows, n-bags.DefaultWindow)
	}
}
