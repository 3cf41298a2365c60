package trace

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/bags/syscalls"
)

// straceEquivSeeds hold the line shapes the scanner takes shortcuts on: pids
// bare and bracketed, stamps of every -t flavour, digits that are not a pid,
// overlong pids, names with digits, resumes, signals, exits and garbage.
var straceEquivSeeds = []string{
	straceSample,
	"[pid 1] 1.5 read(0) = 0\n",
	"12:99:00 read(\n",
	"123 read(0) = 0\n123(\n123\n123 \n 4294967295 read(\n4294967296 read(\n",
	"000000000000000000001 read(\n00000000000000000001 read(\n",
	"[pid 4294967296] read(\n[pid ] read(\n[pid\t7\t] read(\n[pid 7 read(\n",
	"7 12:00:00 wait4(-1) = 0\n7 12:00 wait4(\n7 1.2.3 read(\n7 1.1234567890 read(\n",
	"pipe2([3, 4], 0) = 0\nfrobnicate(1) = 0\n_x(\nRead(\nread (\nread\n",
	"\t\t  <... read resumed>) = 1\n---\n--\n+++ exited\n++\n<..\nstrace: Process 1 attached\nstrace:x\n",
	"1 \n\r\n\n \t \n",
	"1\t2\tread(0) = 0\n",
	"7 0000000000000000000000012:00:00 read(\n7 24:00:00 read(\n7 23:60:00 read(\n7 1:2:3:4 read(\n7 255:00:00 read(\n7 256:0:0 read(\n",
	"7 1099511627775.5 read(\n7 1099511627776 read(\n00000000000000000000000001099511627775 read(\n7 12::00 read(\n7 1:00: read(\n7 1. read(\n7 1.x read(\n7 1.0123456789 read(\n",
}

// drainAll reads r to its end or first error, with the events before it.
func drainAll(r Reader) ([]Event, error) {
	var evs []Event
	for {
		ev, err := r.Next()
		if err == io.EOF {
			return evs, nil
		}
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
	}
}

// sameAsLegacy fails t unless the scanner and the legacy parser read data
// identically under opts: the same events, the same counters, and the same
// error text.
func sameAsLegacy(t *testing.T, data []byte, opts ...Option) {
	t.Helper()
	nr := NewStraceReader(bytes.NewReader(data), opts...)
	lr := newLegacyStraceReader(bytes.NewReader(data), opts...)
	ne, nerr := drainAll(nr)
	le, lerr := drainAll(lr)
	if (nerr == nil) != (lerr == nil) || nerr != nil && nerr.Error() != lerr.Error() {
		t.Fatalf("error %v, legacy %v (input %q)", nerr, lerr, data)
	}
	if len(ne) != len(le) {
		t.Fatalf("%d events, legacy %d (input %q)", len(ne), len(le), data)
	}
	for i := range ne {
		if ne[i] != le[i] {
			t.Fatalf("event %d: %+v, legacy %+v (input %q)", i, ne[i], le[i], data)
		}
	}
	if nr.Stats() != lr.stats {
		t.Fatalf("stats %+v, legacy %+v (input %q)", nr.Stats(), lr.stats, data)
	}
}

var equivOptions = [][]Option{
	nil,
	{WithLenient(true)},
	{WithLenient(true), WithUnknown(UnknownSkip)},
	{WithUnknown(UnknownError)},
	{WithMaxLine(64), WithLenient(true)},
	{WithArch(syscalls.I386), WithLenient(true)},
}

func TestStraceScannerEqualsLegacy(t *testing.T) {
	for _, s := range straceEquivSeeds {
		for _, o := range equivOptions {
			sameAsLegacy(t, []byte(s), o...)
		}
	}
	// Every name of both arches, as strace prints it.
	for _, a := range []syscalls.Arch{syscalls.X86_64, syscalls.I386} {
		var buf bytes.Buffer
		for nr := 0; nr < 1024; nr++ {
			if name, ok := a.Name(uint16(nr)); ok {
				buf.WriteString("42  " + name + "(0) = 0\n")
			}
		}
		sameAsLegacy(t, buf.Bytes(), WithArch(a))
		for _, o := range equivOptions {
			sameAsLegacy(t, buf.Bytes(), o...) // the other arch's names too
		}
	}
}

// FuzzStraceEqualsLegacy checks the scanner against the legacy parser on
// arbitrary input, under every option set of the equivalence test.
func FuzzStraceEqualsLegacy(f *testing.F) {
	for _, s := range straceEquivSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, o := range equivOptions {
			// Both parsers share the line reader, whose buffer is the
			// longest line: a small bound keeps each execution cheap
			// (it comes first, so WithMaxLine(64) above still applies).
			sameAsLegacy(t, data, append([]Option{WithMaxLine(4096)}, o...)...)
		}
	})
}

// trainedProfile trains a profile on r the way `escape-sensor train` does
// and returns its encoding.
func trainedProfile(t *testing.T, r Reader) []byte {
	t.Helper()
	p, err := bags.New(bags.WithArch(r.Meta().Arch.String()))
	if err != nil {
		t.Fatal(err)
	}
	x, err := bags.NewWindower(bags.DefaultWindow, bags.DefaultEpoch)
	if err != nil {
		t.Fatal(err)
	}
	train := func(e bags.Epoch) {
		if _, err := p.Train(e); err != nil {
			t.Fatal(err)
		}
	}
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if e, ok := x.Push(ev.Nr); ok {
			train(e)
		}
	}
	if e, ok := x.Flush(); ok {
		train(e)
	}
	var buf bytes.Buffer
	if _, err := p.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if p.Stats().Bags == 0 {
		t.Fatal("the trace trained no bag")
	}
	return buf.Bytes()
}

// TestStraceRealTraceSameProfile records a real `strace -f` trace (with and
// without -tt) of a small forking workload, then checks that the scanner
// reads it exactly as the legacy parser did and trains a byte-identical
// profile, directly and through the Prefetcher.
func TestStraceRealTraceSameProfile(t *testing.T) {
	if testing.Short() {
		t.Skip("records a trace with strace (-short)")
	}
	if _, err := exec.LookPath("strace"); err != nil {
		t.Fatalf("strace is missing (make deps installs it): %v", err)
	}
	for _, flags := range [][]string{{"-f"}, {"-f", "-tt"}, {"-f", "-ttt"}} {
		out := filepath.Join(t.TempDir(), "trace.txt")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		args := append(flags, "-o", out, "sh", "-c", "ls -R /usr/share/zoneinfo >/dev/null; cat /etc/passwd | wc -l >/dev/null; (sleep 0; true) &  wait")
		if msg, err := exec.CommandContext(ctx, "strace", args...).CombinedOutput(); err != nil {
			cancel()
			t.Fatalf("strace %v: %v: %s", flags, err, msg)
		}
		cancel()
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range equivOptions {
			sameAsLegacy(t, data, o...)
		}
		want := trainedProfile(t, newLegacyStraceReader(bytes.NewReader(data)))
		if got := trainedProfile(t, NewStraceReader(bytes.NewReader(data))); !bytes.Equal(got, want) {
			t.Fatalf("strace %v: the scanner's profile differs from the legacy parser's", flags)
		}
		pf := NewPrefetcher(context.Background(), NewStraceReader(bytes.NewReader(data)))
		got := trainedProfile(t, pf)
		pf.Close()
		if !bytes.Equal(got, want) {
			t.Fatalf("strace %v: the prefetched profile differs from the legacy parser's", flags)
		}
	}
}
