package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// bufSize is the size of every buffer between the stream, zstd and the
// files: large enough that a syscall moves a lot, small enough to be
// allocated per call.
const bufSize = 1 << 20

// streamReader counts the bytes read from the stream and stops at ctx's
// end; a read that fails because ctx ended (see unblockOnCancel) says so.
type streamReader struct {
	ctx context.Context
	r   io.Reader
	n   int64
	err error // the stream's own failure, not its end
}

func (s *streamReader) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := s.r.Read(p)
	s.n += int64(n)
	if err != nil && err != io.EOF {
		if cerr := s.ctx.Err(); cerr != nil {
			err = cerr
		}
		s.err = err
	}
	return n, err
}

// streamWriter is streamReader's twin for Write.
type streamWriter struct {
	ctx context.Context
	w   io.Writer
	n   int64
}

func (s *streamWriter) Write(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := s.w.Write(p)
	s.n += int64(n)
	if err != nil {
		if cerr := s.ctx.Err(); cerr != nil {
			err = cerr
		}
	}
	return n, err
}

// unblockOnCancel makes a Read or Write blocked in a net.Conn, an os.File
// pipe or anything else with deadlines return as soon as ctx ends, by
// setting the deadline to the past. Without deadlines, the transport must
// unblock on ctx itself (a gRPC stream does). The deadline is left set:
// the stream is useless once a transfer is cancelled mid-way.
func unblockOnCancel(ctx context.Context, stream any, write bool) (stop func() bool) {
	var set func(time.Time) error
	if write {
		if d, ok := stream.(interface{ SetWriteDeadline(time.Time) error }); ok {
			set = d.SetWriteDeadline
		}
	} else if d, ok := stream.(interface{ SetReadDeadline(time.Time) error }); ok {
		set = d.SetReadDeadline
	}
	if set == nil {
		return func() bool { return false }
	}
	return context.AfterFunc(ctx, func() { _ = set(time.Unix(1, 0)) })
}

// limitedReader fails, rather than ends, once more than n bytes were read:
// it bounds the whole decompressed stream, headers included.
type limitedReader struct {
	r     io.Reader
	left  int64
	limit int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// Probe one byte: a stream that ends exactly at the limit is fine.
		var one [1]byte
		n, err := io.ReadFull(l.r, one[:])
		if n > 0 {
			return 0, fmt.Errorf("%w: decompressed stream longer than %d bytes", ErrLimit, l.limit)
		}
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// ctxErr makes err say that ctx ended, when it did, whatever the layer
// that noticed first reported.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	return err
}
