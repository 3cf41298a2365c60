package trace

import (
	"bytes"
	"fmt"
	"io"
	"strconv"

	"github.com/escape-mtd/escape/bags/syscalls"
)

// legacyStraceReader is the strace parser as it was before the byte scanner
// (kept verbatim, helpers renamed): the reference the new one must equal,
// event for event, counter for counter and error for error.
type legacyStraceReader struct {
	l     *lines
	o     options
	stats Stats
}

func newLegacyStraceReader(r io.Reader, opts ...Option) *legacyStraceReader {
	o := buildOptions(syscalls.X86_64, opts)
	return &legacyStraceReader{l: newLines(r, o.maxLine), o: o}
}

func (s *legacyStraceReader) Meta() Meta { return Meta{Arch: s.o.arch} }

func (s *legacyStraceReader) Next() (Event, error) {
	return nextParsed("strace", s.l, &s.o, &s.stats, s.parse)
}

func legacyCutSpace(b []byte) []byte { return bytes.TrimLeft(b, " \t") }

// word splits the leading non-space word off b.
func legacyWord(b []byte) (w, rest []byte) {
	i := 0
	for i < len(b) && b[i] != ' ' && b[i] != '\t' {
		i++
	}
	return b[:i], legacyCutSpace(b[i:])
}

func legacyAllDigits(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (s *legacyStraceReader) parse(line []byte) (Event, bool, error) {
	b := legacyCutSpace(line)
	var ev Event
	if len(b) == 0 || bytes.HasPrefix(b, []byte("strace: ")) {
		s.stats.NonSyscall++
		return ev, false, nil
	}
	// Optional pid: "[pid  1234]" or a bare number.
	if bytes.HasPrefix(b, []byte("[pid")) {
		end := bytes.IndexByte(b, ']')
		if end < 0 {
			return ev, false, fmt.Errorf("line %d: unterminated [pid: %w", s.l.line, ErrSyntax)
		}
		tid, err := strconv.ParseUint(string(bytes.TrimSpace(b[4:end])), 10, 32)
		if err != nil {
			return ev, false, fmt.Errorf("line %d: bad pid: %w", s.l.line, ErrSyntax)
		}
		ev.TID, b = uint32(tid), legacyCutSpace(b[end+1:])
	} else if w, rest := legacyWord(b); legacyAllDigits(w) && len(rest) > 0 {
		tid, ok := atou(w, 32)
		if !ok {
			return ev, false, fmt.Errorf("line %d: bad pid: %w", s.l.line, ErrSyntax)
		}
		ev.TID, b = uint32(tid), rest
	}
	// Optional timestamp: HH:MM:SS[.frac] or seconds.frac.
	if w, rest := legacyWord(b); len(w) > 0 && w[0] >= '0' && w[0] <= '9' && len(rest) > 0 {
		ts, ok := legacyParseStraceTime(w)
		if !ok {
			return ev, false, fmt.Errorf("line %d: bad timestamp %q: %w", s.l.line, w, ErrSyntax)
		}
		ev.TS, b = ts, rest
	}
	if bytes.HasPrefix(b, []byte("<...")) || bytes.HasPrefix(b, []byte("---")) || bytes.HasPrefix(b, []byte("+++")) {
		s.stats.NonSyscall++
		return ev, false, nil
	}
	i := 0
	for i < len(b) && (b[i] == '_' || b[i] >= 'a' && b[i] <= 'z' || b[i] >= '0' && b[i] <= '9') {
		i++
	}
	if i == 0 || i == len(b) || b[i] != '(' {
		return ev, false, fmt.Errorf("line %d: want `name(args) = ret`: %w", s.l.line, ErrSyntax)
	}
	nr, known := s.o.arch.Number(string(b[:i]))
	name := b[:i]
	nr, keep, err := s.o.resolve(&s.stats, nr, known, func() string { return string(name) }, s.l.line)
	if err != nil || !keep {
		return ev, false, err
	}
	ev.Nr = nr
	return ev, true, nil
}

// parseStraceTime parses -t/-tt (HH:MM:SS[.us], ns since midnight) and -ttt
// (seconds.us since the epoch) stamps.
func legacyParseStraceTime(w []byte) (int64, bool) {
	var secs int64
	if bytes.Count(w, []byte(":")) == 2 {
		parts := bytes.SplitN(w, []byte(":"), 3)
		h, e1 := strconv.ParseUint(string(parts[0]), 10, 8)
		m, e2 := strconv.ParseUint(string(parts[1]), 10, 8)
		if e1 != nil || e2 != nil || h > 23 || m > 59 {
			return 0, false
		}
		secs, w = int64(h*3600+m*60), parts[2]
	}
	whole, frac, _ := bytes.Cut(w, []byte("."))
	sec, err := strconv.ParseUint(string(whole), 10, 40)
	if err != nil || len(frac) > 9 || (len(frac) > 0 && !legacyAllDigits(frac)) {
		return 0, false
	}
	ns := int64(0)
	for i := 0; i < 9; i++ {
		ns *= 10
		if i < len(frac) {
			ns += int64(frac[i] - '0')
		}
	}
	return (secs+int64(sec))*1e9 + ns, true
}
