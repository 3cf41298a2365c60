package trace

import (
	"bufio"
	"fmt"
	"io"

	"github.com/escape-mtd/escape/bags/syscalls"
)

// ADFAReader reads one ADFA-LD trace: whitespace-separated decimal i386
// syscall numbers (usually one long line). It tokenizes byte by byte, so a
// trace of any length is read in constant memory: no line limit applies.
type ADFAReader struct {
	br    *bufio.Reader
	o     options
	meta  Meta
	tok   uint64
	stats Stats
}

// maxDigits bounds a token: syscall numbers fit in 5 digits.
const maxDigits = 5

// NewADFAReader reads an ADFA-LD trace (arch i386 unless WithArch says otherwise).
func NewADFAReader(r io.Reader, opts ...Option) *ADFAReader {
	o := buildOptions(syscalls.I386, opts)
	return &ADFAReader{br: bufio.NewReaderSize(r, 64<<10), o: o, meta: Meta{Arch: o.arch}}
}

// Meta reports the trace's arch.
func (a *ADFAReader) Meta() Meta { return a.meta }

// Stats reports counters so far (Lines counts tokens).
func (a *ADFAReader) Stats() Stats { return a.stats }

// Next returns the next call.
func (a *ADFAReader) Next() (Event, error) {
	for {
		nr, ok, err := a.token()
		if err != nil {
			if err == io.EOF && a.stats.Events == 0 {
				return Event{}, fmt.Errorf("after %d tokens: %w", a.tok, ErrEmpty)
			}
			return Event{}, err
		}
		if !ok {
			continue // skipped (lenient or unknown-skip)
		}
		a.stats.Events++
		return Event{Nr: nr}, nil
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f'
}

func (a *ADFAReader) token() (uint16, bool, error) {
	var c byte
	var err error
	for {
		if c, err = a.br.ReadByte(); err != nil {
			return 0, false, err
		}
		if !isSpace(c) {
			break
		}
	}
	a.tok++
	a.stats.Lines++
	v, digits, bad := 0, 0, false
	for {
		if c >= '0' && c <= '9' && digits < maxDigits {
			v = v*10 + int(c-'0')
			digits++
		} else {
			bad = true
		}
		if c, err = a.br.ReadByte(); err != nil || isSpace(c) {
			break
		}
	}
	if err != nil && err != io.EOF {
		return 0, false, err
	}
	if bad || v > 0xFFFD {
		if a.o.lenient {
			a.stats.Skipped++
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("token %d: not a syscall number (digits, at most %d): %w", a.tok, 0xFFFD, ErrSyntax)
	}
	_, known := a.o.arch.Name(uint16(v))
	nr, keep, rerr := a.o.resolve(&a.stats, uint16(v), known, func() string { return fmt.Sprint(v) }, a.tok)
	return nr, keep, rerr
}
