package bundle

import (
	"fmt"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Stats says what a Write or a Read moved.
type Stats struct {
	// Files is the number of regular files (directories are not counted).
	Files int
	// Bytes is the files' total size, uncompressed.
	Bytes int64
	// Wire is the bytes written to, or read from, the stream.
	Wire int64
	// Took is the call's duration.
	Took time.Duration
}

// Level is a zstd encoder level.
type Level int

const (
	// LevelFastest is the default: see doc.go for the measurements.
	LevelFastest Level = iota + 1
	LevelDefault
	LevelBetter
	LevelBest
)

func (l Level) zstd() (zstd.EncoderLevel, error) {
	switch l {
	case LevelFastest:
		return zstd.SpeedFastest, nil
	case LevelDefault:
		return zstd.SpeedDefault, nil
	case LevelBetter:
		return zstd.SpeedBetterCompression, nil
	case LevelBest:
		return zstd.SpeedBestCompression, nil
	}
	return 0, fmt.Errorf("unknown compression level %d", int(l))
}

func (l Level) String() string {
	if z, err := l.zstd(); err == nil {
		return z.String()
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// WriteOption tunes Write.
type WriteOption func(*writeConfig)

type writeConfig struct {
	level Level
}

// WithLevel sets the compression level (default LevelFastest).
func WithLevel(l Level) WriteOption {
	return func(c *writeConfig) { c.level = l }
}

// ReadOption tunes Read.
type ReadOption func(*readConfig)

type readConfig struct {
	maxBytes int64
	maxFiles int
}

// Defaults of a Read.
const (
	DefaultMaxBytes = 64 << 30
	DefaultMaxFiles = 100000
)

// WithMaxBytes bounds the total size of the files a Read accepts,
// uncompressed (default DefaultMaxBytes).
func WithMaxBytes(n int64) ReadOption {
	return func(c *readConfig) { c.maxBytes = n }
}

// WithMaxFiles bounds the number of entries, files and directories, a Read
// accepts (default DefaultMaxFiles).
func WithMaxFiles(n int) ReadOption {
	return func(c *readConfig) { c.maxFiles = n }
}

func (c *readConfig) check() error {
	if c.maxBytes < 0 {
		return fmt.Errorf("max bytes %d: must not be negative", c.maxBytes)
	}
	if c.maxFiles < 0 {
		return fmt.Errorf("max files %d: must not be negative", c.maxFiles)
	}
	return nil
}
