package trace

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
)

// Format names a trace format.
type Format string

// Supported formats. Auto sniffs the first bytes.
const (
	Auto      Format = "auto"
	ADFA      Format = "adfa"
	Sysdig    Format = "sysdig"
	Strace    Format = "strace"
	Recording Format = "rec"
)

// Sniff guesses the format from the start of a file.
func Sniff(head []byte) Format {
	if bytes.HasPrefix(head, []byte(recMagic)) {
		return Recording
	}
	line, _, _ := bytes.Cut(head, []byte("\n"))
	f := bytes.Fields(line)
	numeric := len(f) > 0
	for _, w := range f {
		if !allDigits(w) {
			numeric = false
			break
		}
	}
	switch {
	case numeric:
		return ADFA
	case len(f) >= 7 && allDigits(f[0]) && (bytes.Contains(line, []byte(" > ")) || bytes.Contains(line, []byte(" < "))):
		return Sysdig
	}
	return Strace
}

// NewReader returns a Reader of format f over r (Auto sniffs it).
func NewReader(r io.Reader, f Format, opts ...Option) (Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if f == Auto || f == "" {
		head, _ := br.Peek(4096)
		f = Sniff(head)
	}
	switch f {
	case ADFA:
		return NewADFAReader(br, opts...), nil
	case Sysdig:
		return NewSysdigReader(br, opts...), nil
	case Strace:
		return NewStraceReader(br, opts...), nil
	case Recording:
		return NewRecordReader(br)
	}
	return nil, fmt.Errorf("unknown trace format %q (want adfa, sysdig, strace, rec or auto)", f)
}

// ReadFile reads a whole trace file into syscall numbers and its Meta.
func ReadFile(ctx context.Context, path string, f Format, opts ...Option) ([]uint16, Meta, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, Meta{}, fmt.Errorf("read trace %s: %w", path, err)
	}
	defer fh.Close()
	r, err := NewReader(fh, f, opts...)
	if err != nil {
		return nil, Meta{}, fmt.Errorf("read trace %s: %w", path, err)
	}
	calls, err := ReadAll(ctx, r)
	if err != nil {
		return calls, r.Meta(), fmt.Errorf("read trace %s: %w", path, err)
	}
	return calls, r.Meta(), nil
}
