package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// StreamSink writes one JSON object per line to w (e.g. os.Stdout).
type StreamSink struct {
	mu  sync.Mutex
	enc *json.Encoder
}

// NewStreamSink returns a sink writing to w.
func NewStreamSink(w io.Writer) *StreamSink { return &StreamSink{enc: json.NewEncoder(w)} }

// Emit writes e.
func (s *StreamSink) Emit(_ context.Context, e Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.enc.Encode(e); err != nil {
		return fmt.Errorf("emit event: %w", err)
	}
	return nil
}

// Close does nothing: the stream belongs to the caller.
func (s *StreamSink) Close() error { return nil }

// FileSink appends events to a file and rotates it when it would exceed
// maxBytes: path -> path.1 -> ... -> path.<keep>, the oldest removed.
type FileSink struct {
	mu       sync.Mutex
	path     string
	maxBytes int64
	keep     int
	f        *os.File
	size     int64
}

// NewFileSink opens (appends to) path.
func NewFileSink(path string, maxBytes int64, keep int) (*FileSink, error) {
	if path == "" || maxBytes < 1024 || keep < 1 || keep > 100 {
		return nil, fmt.Errorf("event file %q: need a path, max size >= 1024 bytes, 1..100 backups (got %d, %d)",
			path, maxBytes, keep)
	}
	s := &FileSink{path: path, maxBytes: maxBytes, keep: keep}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *FileSink) open() error {
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open event file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open event file: %w", err)
	}
	s.f, s.size = f, st.Size()
	return nil
}

func (s *FileSink) rotate() error {
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("rotate event file: %w", err)
	}
	_ = os.Remove(fmt.Sprintf("%s.%d", s.path, s.keep))
	for i := s.keep - 1; i >= 1; i-- {
		err := os.Rename(fmt.Sprintf("%s.%d", s.path, i), fmt.Sprintf("%s.%d", s.path, i+1))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate event file: %w", err)
		}
	}
	if err := os.Rename(s.path, s.path+".1"); err != nil {
		return fmt.Errorf("rotate event file: %w", err)
	}
	return s.open()
}

// Emit appends e, rotating first if the line would not fit.
func (s *FileSink) Emit(_ context.Context, e Event) error {
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("emit event: %w", err)
	}
	line = append(line, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.size > 0 && s.size+int64(len(line)) > s.maxBytes {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	n, err := s.f.Write(line)
	s.size += int64(n)
	if err != nil {
		return fmt.Errorf("emit event: %w", err)
	}
	return nil
}

// Close closes the file.
func (s *FileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Close()
}

// Multi fans events out to several sinks; an error of one does not stop the
// others.
type Multi []Sink

// Emit sends e to every sink.
func (m Multi) Emit(ctx context.Context, e Event) error {
	var errs []error
	for _, s := range m {
		errs = append(errs, s.Emit(ctx, e))
	}
	return errors.Join(errs...)
}

// Close closes every sink.
func (m Multi) Close() error {
	var errs []error
	for _, s := range m {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}
