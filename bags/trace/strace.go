package trace

import (
	"bytes"
	"fmt"
	"io"

	"github.com/escape-mtd/escape/bags/syscalls"
)

// StraceReader reads `strace -f` output, with or without -o, -t/-tt/-ttt:
//
//	[pid  1234] 12:00:01.123456 openat(AT_FDCWD, "/etc/passwd", O_RDONLY) = 3
//	1234  1700000000.123456 read(3, <unfinished ...>
//	1234  <... read resumed>"root:x:0:0"..., 4096) = 1234
//	--- SIGCHLD {si_signo=SIGCHLD, ...} ---
//	+++ exited with 0 +++
//
// A call counts once, at its start (a line `name(`); `<... resumed>` halves,
// signals, exits and `strace:` notes are counted in Stats.NonSyscall.
// TS is ns since the Unix epoch for -ttt, since midnight for -t/-tt.
type StraceReader struct {
	l     *lines
	o     options
	names *nameIndex // the arch's names; nil for an arch without a table
	meta  Meta
	stats Stats
}

// NewStraceReader reads strace output (arch x86_64 unless WithArch).
func NewStraceReader(r io.Reader, opts ...Option) *StraceReader {
	o := buildOptions(syscalls.X86_64, opts)
	return &StraceReader{l: newLines(r, o.maxLine), o: o, names: indexFor(o.arch), meta: Meta{Arch: o.arch}}
}

// Meta reports the stream's arch.
func (s *StraceReader) Meta() Meta { return s.meta }

// Stats reports counters so far.
func (s *StraceReader) Stats() Stats { return s.stats }

// Next returns the next call.
func (s *StraceReader) Next() (Event, error) {
	return nextParsed("strace", s.l, &s.o, &s.stats, s.parse)
}

// cutSpace drops leading blanks (a loop: bytes.TrimLeft builds a set per call).
func cutSpace(b []byte) []byte {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	return b[i:]
}

// word splits the leading non-space word off b.
func word(b []byte) (w, rest []byte) {
	i := 0
	for i < len(b) && b[i] != ' ' && b[i] != '\t' {
		i++
	}
	return b[:i], cutSpace(b[i:])
}

func allDigits(b []byte) bool {
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

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }

// parse reads one line in a single forward scan: the optional pid and stamp,
// then the call name, hashed while it is scanned and looked up in the arch's
// name index; the arguments are never looked at.
func (s *StraceReader) parse(line []byte) (Event, bool, error) {
	b := cutSpace(line)
	var ev Event
	if len(b) == 0 || b[0] == 's' && hasPrefix(b, "strace: ") {
		s.stats.NonSyscall++
		return ev, false, nil
	}
	// Optional pid: "[pid  1234]" or a bare number.
	if b[0] == '[' && hasPrefix(b, "[pid") {
		end := bytes.IndexByte(b, ']')
		if end < 0 {
			return ev, false, fmt.Errorf("line %d: unterminated [pid: %w", s.l.line, ErrSyntax)
		}
		tid, ok := atou(bytes.TrimSpace(b[4:end]), 32)
		if !ok {
			return ev, false, fmt.Errorf("line %d: bad pid: %w", s.l.line, ErrSyntax)
		}
		ev.TID, b = uint32(tid), cutSpace(b[end+1:])
	} else if isDigit(b[0]) {
		// A bare pid: a word of digits followed by more of the line. The
		// digits are converted while they are scanned.
		i, tid, ok := 0, uint64(0), true
		for ; i < len(b) && isDigit(b[i]); i++ {
			if d := uint64(b[i] - '0'); tid > (1<<32-1-d)/10 {
				ok = false
			} else {
				tid = tid*10 + d
			}
		}
		ok = ok && i <= 20 // atou's bound, kept so that every line reads as before
		if i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			if rest := cutSpace(b[i:]); len(rest) > 0 {
				if !ok {
					return ev, false, fmt.Errorf("line %d: bad pid: %w", s.l.line, ErrSyntax)
				}
				ev.TID, b = uint32(tid), rest
			}
		}
	}
	// Optional timestamp: HH:MM:SS[.frac] or seconds.frac.
	if len(b) > 0 && isDigit(b[0]) {
		if w, rest := word(b); len(rest) > 0 {
			ts, ok := parseStraceTime(w)
			if !ok {
				return ev, false, fmt.Errorf("line %d: bad timestamp %q: %w", s.l.line, w, ErrSyntax)
			}
			ev.TS, b = ts, rest
		}
	}
	if len(b) >= 3 {
		switch {
		case b[0] == '<' && hasPrefix(b, "<..."), b[0] == '-' && hasPrefix(b, "---"), b[0] == '+' && hasPrefix(b, "+++"):
			s.stats.NonSyscall++
			return ev, false, nil
		}
	}
	h, i := fnvOffset, 0
	for i < len(b) {
		c := b[i]
		if c != '_' && (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			break
		}
		h = fnvStep(h, c)
		i++
	}
	if i == 0 || i == len(b) || b[i] != '(' {
		return ev, false, fmt.Errorf("line %d: want `name(args) = ret`: %w", s.l.line, ErrSyntax)
	}
	name := b[:i]
	if s.names != nil {
		if nr, ok := s.names.lookup(name, h); ok {
			ev.Nr = nr
			return ev, true, nil
		}
	}
	nr, keep, err := s.o.resolve(&s.stats, 0, false, func() string { return string(name) }, s.l.line)
	if err != nil || !keep {
		return ev, false, err
	}
	ev.Nr = nr
	return ev, true, nil
}

// parseStraceTime parses -t/-tt (HH:MM:SS[.us], ns since midnight) and -ttt
// (seconds.us since the epoch) stamps, without allocating.
func parseStraceTime(w []byte) (int64, bool) {
	var secs int64
	if bytes.Count(w, []byte(":")) == 2 {
		i := bytes.IndexByte(w, ':')
		j := i + 1 + bytes.IndexByte(w[i+1:], ':')
		h, ok1 := decimal(w[:i], 8)
		m, ok2 := decimal(w[i+1:j], 8)
		if !ok1 || !ok2 || h > 23 || m > 59 {
			return 0, false
		}
		secs, w = int64(h*3600+m*60), w[j+1:]
	}
	whole, frac, _ := bytes.Cut(w, []byte("."))
	sec, ok := decimal(whole, 40)
	if !ok || len(frac) > 9 || (len(frac) > 0 && !allDigits(frac)) {
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

// decimal is strconv.ParseUint(b, 10, bits) without the string: digits
// only, at least one, any number of leading zeros, no overflow of bits.
func decimal(b []byte, bits uint) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (1<<bits-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}
