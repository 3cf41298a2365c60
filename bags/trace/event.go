package trace

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/bags/syscalls"
)

// Event is one system call of a stream.
type Event struct {
	Nr  uint16 // syscall number in the stream's arch (bags.Unknown if unmapped)
	TID uint32 // thread id, 0 if the format has none
	TS  int64  // timestamp in ns (format-dependent epoch), 0 if none
}

// Meta describes a stream.
type Meta struct {
	Arch        syscalls.Arch
	ContainerID string
	Name        string // container name
	Workload    string // profile key
	Host        string
	StartNS     int64 // wall-clock start, Unix ns, 0 if unknown
}

// Reader is a stream of events. Next returns io.EOF at a clean end.
type Reader interface {
	Meta() Meta
	Next() (Event, error)
}

// Stats counts what a text reader saw and set aside.
type Stats struct {
	Lines      uint64 // lines (or tokens for ADFA) read
	Events     uint64 // events returned
	Skipped    uint64 // malformed lines skipped in lenient mode
	Unknown    uint64 // unknown syscall names/numbers met
	NonSyscall uint64 // lines that are not syscall entries (exits, signals, resumes, pseudo-events)
}

var (
	ErrSyntax         = errors.New("malformed trace")
	ErrLineTooLong    = errors.New("line too long")
	ErrUnknownSyscall = errors.New("unknown syscall")
	ErrEmpty          = errors.New("trace holds no system calls")
	ErrTruncated      = errors.New("recording truncated")
	ErrChecksum       = errors.New("recording checksum mismatch")
	ErrFormat         = errors.New("not a supported recording")
)

// UnknownPolicy says what a reader does with a syscall it cannot name.
type UnknownPolicy uint8

const (
	// UnknownMap maps it to bags.Unknown and counts it: the call stays in the
	// stream (an unknown call is itself suspicious), nothing is lost.
	UnknownMap UnknownPolicy = iota
	// UnknownSkip drops it and counts it.
	UnknownSkip
	// UnknownError stops with ErrUnknownSyscall.
	UnknownError
)

// DefaultMaxLine bounds one text line; longer lines are an error (or skipped
// when lenient) instead of an unbounded allocation.
const DefaultMaxLine = 1 << 20

type options struct {
	unknown UnknownPolicy
	maxLine int
	lenient bool
	arch    syscalls.Arch
}

// Option configures a text reader.
type Option func(*options)

// WithUnknown sets the unknown-syscall policy (default UnknownMap).
func WithUnknown(p UnknownPolicy) Option { return func(o *options) { o.unknown = p } }

// WithMaxLine sets the longest accepted line in bytes (default 1 MiB).
func WithMaxLine(n int) Option { return func(o *options) { o.maxLine = max(n, 64) } }

// WithLenient skips malformed or overlong lines (counted in Stats.Skipped)
// instead of failing on the first one.
func WithLenient(on bool) Option { return func(o *options) { o.lenient = on } }

// WithArch sets the arch whose names/numbers the trace uses (strace and
// sysdig default to x86_64, ADFA-LD to i386).
func WithArch(a syscalls.Arch) Option { return func(o *options) { o.arch = a } }

func buildOptions(def syscalls.Arch, opts []Option) options {
	o := options{maxLine: DefaultMaxLine, arch: def}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// lines reads bounded lines without allocating per line.
type lines struct {
	br   *bufio.Reader
	max  int
	line uint64
}

func newLines(r io.Reader, max int) *lines {
	return &lines{br: bufio.NewReaderSize(r, max), max: max}
}

// next returns the next line without its newline. The slice is valid until
// the following call. An overlong line is consumed and reported.
func (l *lines) next() ([]byte, error) {
	b, err := l.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		l.line++
		for err == bufio.ErrBufferFull {
			_, err = l.br.ReadSlice('\n')
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		return nil, fmt.Errorf("line %d: longer than %d bytes: %w", l.line, l.max, ErrLineTooLong)
	}
	if err == io.EOF && len(b) == 0 {
		return nil, io.EOF
	}
	if err != nil && err != io.EOF {
		return nil, err
	}
	l.line++
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b, nil
}

// resolve applies the unknown policy to a name lookup result; what names
// the call for the error and is only evaluated then (no per-call allocation).
func (o *options) resolve(st *Stats, nr uint16, known bool, what func() string, line uint64) (uint16, bool, error) {
	if known {
		return nr, true, nil
	}
	st.Unknown++
	switch o.unknown {
	case UnknownSkip:
		return 0, false, nil
	case UnknownError:
		return 0, false, fmt.Errorf("line %d: %q in %v: %w", line, what(), o.arch, ErrUnknownSyscall)
	}
	return bags.Unknown, true, nil
}

// ReadAll drains r into syscall numbers. It returns the numbers read before
// any error together with the error. ctx is checked every 64 Ki events.
func ReadAll(ctx context.Context, r Reader) ([]uint16, error) {
	var out []uint16
	for i := 0; ; i++ {
		if i&0xFFFF == 0 {
			if err := ctx.Err(); err != nil {
				return out, err
			}
		}
		ev, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev.Nr)
	}
}

// nextParsed is the loop shared by the line-oriented text readers: it
// returns the next line that parse turns into an event, counting lines and
// (when lenient) skipping lines whose error is skippable. An input with no
// event at all is ErrEmpty, so an empty trace is never taken for a clean one.
func nextParsed(format string, l *lines, o *options, stats *Stats, parse func([]byte) (Event, bool, error)) (Event, error) {
	for {
		line, err := l.next()
		if err == io.EOF {
			if stats.Events == 0 {
				return Event{}, fmt.Errorf("%s: %d lines: %w", format, l.line, ErrEmpty)
			}
			return Event{}, io.EOF
		}
		stats.Lines++
		if err == nil {
			var ev Event
			var ok bool
			ev, ok, err = parse(line)
			if err == nil && ok {
				stats.Events++
				return ev, nil
			}
		}
		if err != nil {
			if o.lenient && skippable(err) {
				stats.Skipped++
				continue
			}
			return Event{}, fmt.Errorf("%s: %w", format, err)
		}
	}
}
