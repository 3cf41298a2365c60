package bags

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/escape-mtd/escape/internal/atomicfile"
)

// SaveFile writes the profile to path atomically: a temporary file in the
// same directory is written, fsynced and renamed over path, then the
// directory is fsynced, so a crash leaves either the old or the new profile,
// never a torn one. If the file currently at path does not verify, it is
// moved aside to path.corrupt-<unix-nanos> first rather than silently
// replaced, so it can still be inspected.
func (p *Profile) SaveFile(path string) error {
	p.mu.Lock()
	buf := p.encodeLocked()
	log := p.cfg.log
	p.mu.Unlock()
	if err := preserveCorrupt(path, log); err != nil {
		return fmt.Errorf("save profile %s: %w", path, err)
	}
	if err := atomicfile.WriteFile(path, buf, 0o600); err != nil {
		return fmt.Errorf("save profile %s: %w", path, err)
	}
	return nil
}

func preserveCorrupt(path string, log *zap.Logger) error {
	old, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, derr := decodeProfile(old); derr == nil || errors.Is(derr, ErrVersion) {
		return nil // a good (or newer-format) profile is replaced normally
	}
	aside := fmt.Sprintf("%s.corrupt-%d", path, time.Now().UnixNano())
	if err := os.Rename(path, aside); err != nil {
		return fmt.Errorf("move corrupt profile aside: %w", err)
	}
	log.Warn("existing profile did not verify; kept aside", zap.String("path", path), zap.String("aside", aside))
	return nil
}

// LoadFile reads a profile saved by SaveFile. A truncated or corrupted file
// yields an error wrapping ErrCorrupt and is left untouched.
func LoadFile(path string, opts ...Option) (*Profile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load profile %s: %w", path, err)
	}
	p, err := ReadProfile(bytes.NewReader(data), opts...)
	if err != nil {
		return nil, fmt.Errorf("load profile %s: %w", path, err)
	}
	return p, nil
}
