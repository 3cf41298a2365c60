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

// Audit appends events to a JSON-lines file, fsynced per event.
type Audit struct {
	mu  sync.Mutex
	f   *os.File
	seq uint64
	now func() time.Time
}

// OpenAudit opens (creating if needed) the audit log at path. Sequence
// numbers continue from the last valid line; a torn last line (a crash
// mid-write) is cut off so later events stay parseable.
func OpenAudit(path string) (*Audit, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	a := &Audit{f: f, now: time.Now}
	var good int64
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			var ev AuditEvent
			if jerr := json.Unmarshal(line, &ev); jerr != nil {
				f.Close()
				return nil, fmt.Errorf("audit log %s: corrupt line at byte %d: %w", path, good, jerr)
			}
			a.seq = ev.Seq
			good += int64(len(line))
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("read audit log %s: %w", path, err)
		}
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return a, nil
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
	if _, err := a.f.Write(append(b, '\n')); err != nil {
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
