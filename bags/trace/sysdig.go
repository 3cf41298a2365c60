package trace

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/escape-mtd/escape/bags/syscalls"
)

// SysdigReader reads sysdig text output as used by LID-DS:
//
//	timestamp_ns user_id pid process_name tid syscall_name direction args...
//
// Only enter events (direction '>') are calls; exits ('<') and sysdig's
// pseudo-events (procexit, switch, signaldeliver, ...) are counted in
// Stats.NonSyscall. Process names may contain spaces: the direction token is
// located first and the syscall name and tid are read to its left.
type SysdigReader struct {
	l     *lines
	o     options
	meta  Meta
	stats Stats
	toks  [16][]byte
}

// pseudoEvents are sysdig event types that are not system calls.
var pseudoEvents = map[string]bool{
	"procexit": true, "switch": true, "signaldeliver": true, "page_fault": true,
	"container": true, "drop": true, "notification": true, "infra": true,
	"cpu_hotplug": true, "procinfo": true, "k8s": true, "mesos": true,
	"pluginevent": true, "tracer": true, "scapevent": true, "sysdigevent": true,
}

// NewSysdigReader reads sysdig text (arch x86_64 unless WithArch).
func NewSysdigReader(r io.Reader, opts ...Option) *SysdigReader {
	o := buildOptions(syscalls.X86_64, opts)
	return &SysdigReader{l: newLines(r, o.maxLine), o: o, meta: Meta{Arch: o.arch}}
}

// Meta reports the stream's arch.
func (s *SysdigReader) Meta() Meta { return s.meta }

// Stats reports counters so far.
func (s *SysdigReader) Stats() Stats { return s.stats }

// fields splits b on spaces into at most len(dst) tokens, without allocating;
// the last token keeps the remainder.
func fields(b []byte, dst [][]byte) int {
	n := 0
	for len(b) > 0 && n < len(dst) {
		i := 0
		for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			i++
		}
		b = b[i:]
		if len(b) == 0 {
			break
		}
		j := 0
		for j < len(b) && b[j] != ' ' && b[j] != '\t' {
			j++
		}
		dst[n] = b[:j]
		n++
		b = b[j:]
	}
	return n
}

// Next returns the next enter event.
func (s *SysdigReader) Next() (Event, error) {
	return nextParsed("sysdig", s.l, &s.o, &s.stats, s.parse)
}

// skippable reports errors that lenient mode may skip: malformed or overlong
// lines. I/O and unknown-syscall errors are never skipped.
func skippable(err error) bool { return errors.Is(err, ErrSyntax) || errors.Is(err, ErrLineTooLong) }

func (s *SysdigReader) parse(line []byte) (Event, bool, error) {
	if len(bytes.TrimSpace(line)) == 0 {
		s.stats.NonSyscall++
		return Event{}, false, nil
	}
	n := fields(line, s.toks[:])
	k := -1
	for i := 6; i < n; i++ {
		if len(s.toks[i]) == 1 && (s.toks[i][0] == '>' || s.toks[i][0] == '<') {
			k = i
			break
		}
	}
	if k < 0 {
		return Event{}, false, fmt.Errorf("line %d: want `ts uid pid proc tid syscall dir args`: %w", s.l.line, ErrSyntax)
	}
	ts, ok1 := atou(s.toks[0], 63)
	tid, ok2 := atou(s.toks[k-2], 32)
	if !ok1 || !ok2 {
		return Event{}, false, fmt.Errorf("line %d: bad timestamp or tid: %w", s.l.line, ErrSyntax)
	}
	if s.toks[k][0] == '<' {
		s.stats.NonSyscall++
		return Event{}, false, nil
	}
	name := s.toks[k-1]
	nr, known := s.o.arch.Number(string(name))
	if !known && pseudoEvents[string(name)] {
		s.stats.NonSyscall++
		return Event{}, false, nil
	}
	nr, keep, err := s.o.resolve(&s.stats, nr, known, func() string { return string(name) }, s.l.line)
	if err != nil || !keep {
		return Event{}, false, err
	}
	return Event{Nr: nr, TID: uint32(tid), TS: int64(ts)}, true, nil
}

// atou parses an unsigned decimal of at most bits bits, and of at most 20
// digits, without allocating.
func atou(b []byte, bits uint) (uint64, bool) {
	if len(b) > 20 {
		return 0, false
	}
	return decimal(b, bits)
}
