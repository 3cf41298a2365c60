package trace

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/bags/syscalls"

	"github.com/escape-mtd/escape/internal/datasets"
)

func drain(t *testing.T, r Reader) ([]Event, error) {
	t.Helper()
	var out []Event
	for i := 0; i < 1e7; i++ {
		ev, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
	t.Fatal("reader did not terminate")
	return nil, nil
}

func nrs(evs []Event) []uint16 {
	out := make([]uint16, len(evs))
	for i, e := range evs {
		out[i] = e.Nr
	}
	return out
}

func eq(a, b []uint16) bool { return bytes.Equal(u16b(a), u16b(b)) }
func u16b(a []uint16) []byte {
	var b []byte
	for _, x := range a {
		b = append(b, byte(x), byte(x>>8))
	}
	return b
}

func TestADFA(t *testing.T) {
	evs, err := drain(t, NewADFAReader(strings.NewReader(" 6 6 63\n\t120 252 \n")))
	if err != nil || !eq(nrs(evs), []uint16{6, 6, 63, 120, 252}) {
		t.Fatalf("%v %v", evs, err)
	}
	_, err = drain(t, NewADFAReader(strings.NewReader("6 6x 3")))
	if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), "token 2") {
		t.Fatalf("bad token: %v", err)
	}
	evs, err = drain(t, NewADFAReader(strings.NewReader("6 6x 3 99999999"), WithLenient(true)))
	if err != nil || !eq(nrs(evs), []uint16{6, 3}) {
		t.Fatalf("lenient: %v %v", evs, err)
	}
	if _, err := drain(t, NewADFAReader(strings.NewReader(" \n "))); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty: %v", err)
	}
	// 500 is not an i386 syscall: mapped to Unknown by default, error on demand.
	evs, _ = drain(t, NewADFAReader(strings.NewReader("6 500")))
	if evs[1].Nr != bags.Unknown {
		t.Fatalf("unknown number not mapped: %v", evs)
	}
	if _, err := drain(t, NewADFAReader(strings.NewReader("6 500"), WithUnknown(UnknownError))); !errors.Is(err, ErrUnknownSyscall) {
		t.Fatalf("unknown error policy: %v", err)
	}
	// A single 4 MB line is fine: ADFA is tokenized, not line-buffered.
	huge := strings.Repeat("3 ", 2<<20)
	evs, err = drain(t, NewADFAReader(strings.NewReader(huge)))
	if err != nil || len(evs) != 2<<20 {
		t.Fatalf("huge line: %d %v", len(evs), err)
	}
}

const sysdigSample = `1631078867380457267 0 2902771 apache2 2902771 select < res=0
1631078867380460410 0 2902771 apache2 2902771 wait4 >
1631078867380462154 0 2902771 apache2 2902771 wait4 <
1631078867467689061 33 2902774 my proc 2902775 openat > dirfd=-100 name=/x
1631078867467689062 33 2902774 apache2 2902775 procexit >
1631078867467689063 33 2902774 apache2 2902775 bogus_call >
`

func TestSysdig(t *testing.T) {
	r := NewSysdigReader(strings.NewReader(sysdigSample))
	evs, err := drain(t, r)
	if err != nil || len(evs) != 3 {
		t.Fatalf("%v %v", evs, err)
	}
	wait4, _ := syscalls.X86_64.Number("wait4")
	if evs[0].Nr != wait4 || evs[0].TID != 2902771 || evs[0].TS != 1631078867380460410 {
		t.Fatalf("event 0 %+v", evs[0])
	}
	if evs[1].Nr != 257 || evs[1].TID != 2902775 {
		t.Fatalf("proc name with space: %+v", evs[1])
	}
	if evs[2].Nr != bags.Unknown || r.Stats().Unknown != 1 || r.Stats().NonSyscall != 3 {
		t.Fatalf("unknown/pseudo handling: %+v %+v", evs[2], r.Stats())
	}
	_, err = drain(t, NewSysdigReader(strings.NewReader("garbage line\n")))
	if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("garbage: %v", err)
	}
	long := "1 0 1 p 1 read > " + strings.Repeat("a", 200) + "\n1 0 1 p 1 write >\n"
	if _, err := drain(t, NewSysdigReader(strings.NewReader(long), WithMaxLine(100))); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("long line: %v", err)
	}
	evs, err = drain(t, NewSysdigReader(strings.NewReader(long), WithMaxLine(100), WithLenient(true)))
	if err != nil || len(evs) != 1 || evs[0].Nr != 1 {
		t.Fatalf("lenient long line: %v %v", evs, err)
	}
	if _, err := drain(t, NewSysdigReader(strings.NewReader(""))); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty: %v", err)
	}
}

func TestLIDDSSample(t *testing.T) {
	path, err := datasets.Path("lid-ds-2021-sample", "aggressive_nightingale_1018.sc")
	if err != nil {
		t.Skip(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := NewSysdigReader(f, WithUnknown(UnknownError))
	evs, err := drain(t, r)
	if err != nil {
		t.Fatal(err)
	}
	// README: 11,734 syscall events, 38 names, 7 threads; each has an
	// enter and an exit line.
	st := r.Stats()
	names := map[uint16]bool{}
	for _, e := range evs {
		names[e.Nr] = true
	}
	if len(evs) != 11734 || st.Lines != 2*11734 || st.Unknown != 0 || len(names) != 38 {
		t.Fatalf("lines %d events %d stats %+v", st.Lines, len(evs), st)
	}
	tids := map[uint32]bool{}
	for _, e := range evs {
		tids[e.TID] = true
	}
	if len(tids) != 7 {
		t.Fatalf("%d threads, want 7", len(tids))
	}
}

const straceSample = `strace: Process 4242 attached
4241  execve("/bin/sh", ["sh"], 0x7ffd /* 20 vars */) = 0
[pid  4242] 12:00:01.500000 openat(AT_FDCWD, "/etc/passwd", O_RDONLY) = 3
4242  1700000000.000001 read(3,  <unfinished ...>
4241  <... wait4 resumed>[{WIFEXITED(s) && WEXITSTATUS(s) == 0}], 0, NULL) = 4242
4241  --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED} ---
4242  +++ exited with 0 +++
close(3)                                = 0
`

func TestStrace(t *testing.T) {
	r := NewStraceReader(strings.NewReader(straceSample))
	evs, err := drain(t, r)
	if err != nil || !eq(nrs(evs), []uint16{59, 257, 0, 3}) {
		t.Fatalf("%v %v", evs, err)
	}
	if evs[1].TID != 4242 || evs[1].TS != (12*3600+1)*1e9+5e8 || evs[2].TS != 1700000000*1e9+1000 {
		t.Fatalf("tid/ts: %+v %+v", evs[1], evs[2])
	}
	if r.Stats().NonSyscall != 4 {
		t.Fatalf("non-syscall %d", r.Stats().NonSyscall)
	}
	if _, err := drain(t, NewStraceReader(strings.NewReader("4241 ???\n"))); !errors.Is(err, ErrSyntax) {
		t.Fatalf("bad line: %v", err)
	}
	if _, err := drain(t, NewStraceReader(strings.NewReader("frobnicate(1) = 0\n"), WithUnknown(UnknownError))); !errors.Is(err, ErrUnknownSyscall) {
		t.Fatalf("unknown: %v", err)
	}
}

func TestRecordingRoundTripAndDamage(t *testing.T) {
	meta := Meta{Arch: syscalls.X86_64, ContainerID: "abc123", Name: "web", Workload: "nginx", Host: "h1", StartNS: 1e18}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, meta, WithTimestamps(true), WithTIDs(true), WithFrameEvents(100))
	if err != nil {
		t.Fatal(err)
	}
	var want []Event
	for i := 0; i < 1050; i++ {
		ev := Event{Nr: uint16(i % 300), TID: uint32(7 + i%3), TS: 1e18 + int64(i*i) - int64(i%5)*1000}
		want = append(want, ev)
		if err := w.Write(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	r, err := NewRecordReader(bytes.NewReader(good))
	if err != nil || r.Meta() != meta {
		t.Fatalf("header: %v %+v", err, r)
	}
	got, err := drain(t, r)
	if err != nil || len(got) != len(want) {
		t.Fatalf("read %d events: %v", len(got), err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d: %+v want %+v", i, got[i], want[i])
		}
	}
	// Truncation mid-way: all complete frames come back, then ErrTruncated.
	r, _ = NewRecordReader(bytes.NewReader(good[:len(good)*2/3]))
	got, err = drain(t, r)
	if !errors.Is(err, ErrTruncated) || len(got) == 0 || len(got)%100 != 0 {
		t.Fatalf("truncated: %d events %v", len(got), err)
	}
	bad := append([]byte(nil), good...)
	bad[len(bad)/2] ^= 1
	r, _ = NewRecordReader(bytes.NewReader(bad))
	if _, err = drain(t, r); !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrFormat) {
		t.Fatalf("flipped bit: %v", err)
	}
	if _, err := NewRecordReader(bytes.NewReader(nil)); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty: %v", err)
	}
	if _, err := NewRecordReader(strings.NewReader("6 6 63 6 42 120 6 195")); !errors.Is(err, ErrFormat) {
		t.Fatalf("not a recording: %v", err)
	}
}

func TestWriterZeroAlloc(t *testing.T) {
	w, _ := NewWriter(io.Discard, Meta{Arch: syscalls.X86_64}, WithTimestamps(true), WithTIDs(true))
	n := testing.AllocsPerRun(10000, func() { w.Write(Event{Nr: 1, TID: 2, TS: 3}) })
	if n != 0 {
		t.Fatalf("Write allocates %v", n)
	}
}

func TestSniffAndReadFile(t *testing.T) {
	cases := map[string]Format{"6 6 63 6": ADFA, sysdigSample: Sysdig, straceSample: Strace, recMagic + "xx": Recording}
	for in, want := range cases {
		if got := Sniff([]byte(in)); got != want {
			t.Errorf("Sniff(%.20q) = %s want %s", in, got, want)
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "t.txt")
	os.WriteFile(p, []byte("6 6 63\n"), 0o600)
	calls, meta, err := ReadFile(context.Background(), p, Auto)
	if err != nil || meta.Arch != syscalls.I386 || !eq(calls, []uint16{6, 6, 63}) {
		t.Fatalf("ReadFile: %v %v %v", calls, meta, err)
	}
	if _, _, err := ReadFile(context.Background(), filepath.Join(dir, "none"), Auto); err == nil {
		t.Fatal("missing file read")
	}
}
