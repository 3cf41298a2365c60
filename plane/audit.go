package plane

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// AuditEvent is one line of the audit log: a decision or an action, with
// its reasons and outcome. The schema is documented in docs/plane.md.
type AuditEvent struct {
	Time      time.Time      `json:"time"`
	Seq       uint64         `json:"seq"`
	Kind      string         `json:"kind"` // report, decision, action, auth, config
	Container string         `json:"container,omitempty"`
	Host      string         `json:"host,omitempty"`
	Action    string         `json:"action,omitempty"`
	Decision  string         `json:"decision,omitempty"`
	Reasons   []string       `json:"reasons,omitempty"`
	Outcome   string         `json:"outcome,omitempty"` // ok, failed, reverted, refused
	Error     string         `json:"error,omitempty"`
	Duration  float64        `json:"duration_ms,omitempty"`
	Actor     string         `json:"actor,omitempty"` // sensor/operator identity (uid@pid)
	Details   map[string]any `json:"details,omitempty"`
}

// Audit appends events to a JSON-lines file, fsynced per event, and
// rotates it past a size: path -> path.1 -> ... -> path.<keep>, the oldest
// removed. Sequence numbers go on across files.
type Audit struct {
	mu       sync.Mutex
	path     string
	f        *os.File
	size     int64
	seq      uint64
	now      func() time.Time
	maxBytes int64
	keep     int
}

// AuditOption tunes an Audit.
type AuditOption func(*Audit)

// WithAuditRotation rotates the log once it would exceed maxBytes, keeping
// keep old files (default 64 MiB, 5).
func WithAuditRotation(maxBytes int64, keep int) AuditOption {
	return func(a *Audit) { a.maxBytes, a.keep = maxBytes, keep }
}

// OpenAudit opens (creating if needed) the audit log at path. Sequence
// numbers continue from the last valid line; a torn last line (a crash
// mid-write) is cut off so later events stay parseable.
func OpenAudit(path string, opts ...AuditOption) (*Audit, error) {
	a := &Audit{path: path, now: time.Now, maxBytes: 64 << 20, keep: 5}
	for _, o := range opts {
		o(a)
	}
	if a.maxBytes < 4096 || a.keep < 1 || a.keep > 100 {
		return nil, fmt.Errorf("audit log %s: rotation at %d bytes keeping %d: want at least 4096 bytes and 1..100 files", path, a.maxBytes, a.keep)
	}
	if err := a.open(); err != nil {
		return nil, err
	}
	if a.seq == 0 {
		// A log just rotated is empty: the newest old file holds the last
		// sequence number.
		a.seq = lastSeq(path + ".1")
	}
	return a, nil
}

// lastSeq returns the sequence number of the last valid line of path (0 if
// none).
func lastSeq(path string) uint64 {
	evs, _ := ReadAudit(path)
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].Seq
}

func (a *Audit) open() error {
	path := a.path
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	a.f = f
	var good int64
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			var ev AuditEvent
			if jerr := json.Unmarshal(line, &ev); jerr != nil {
				f.Close()
				return fmt.Errorf("audit log %s: corrupt line at byte %d: %w", path, good, jerr)
			}
			a.seq = ev.Seq
			good += int64(len(line))
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			f.Close()
			return fmt.Errorf("read audit log %s: %w", path, err)
		}
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return fmt.Errorf("audit log %s: %w", path, err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return err
	}
	a.size = good
	return nil
}

// rotate moves the full log aside and opens a new one. The old files are
// shifted by rename, so a crash in between loses no event.
func (a *Audit) rotate() error {
	if err := a.f.Close(); err != nil {
		return fmt.Errorf("rotate audit log: %w", err)
	}
	_ = os.Remove(fmt.Sprintf("%s.%d", a.path, a.keep))
	for i := a.keep - 1; i >= 1; i-- {
		if err := os.Rename(fmt.Sprintf("%s.%d", a.path, i), fmt.Sprintf("%s.%d", a.path, i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate audit log: %w", err)
		}
	}
	if err := os.Rename(a.path, a.path+".1"); err != nil {
		return fmt.Errorf("rotate audit log: %w", err)
	}
	seq := a.seq
	if err := a.open(); err != nil {
		return err
	}
	a.seq = seq
	return nil
}

// Log appends ev, stamping time and sequence, and syncs it to disk.
func (a *Audit) Log(ev AuditEvent) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seq++
	ev.Seq = a.seq
	if ev.Time.IsZero() {
		ev.Time = a.now().UTC()
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	b = append(b, '\n')
	if a.size > 0 && a.size+int64(len(b)) > a.maxBytes {
		if err := a.rotate(); err != nil {
			return err
		}
	}
	n, err := a.f.Write(b)
	a.size += int64(n)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return a.f.Sync()
}

// Close closes the log.
func (a *Audit) Close() error { return a.f.Close() }

// ReadAudit returns every event of the log at path.
func ReadAudit(path string) ([]AuditEvent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		var ev AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return out, fmt.Errorf("audit log %s line %d: %w", path, n, err)
		}
		out = append(out, ev)
	}
	return out, sc.Err()
}
