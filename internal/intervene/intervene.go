// Package intervene records when ESCAPE itself perturbs a container: the
// node agent's checkpoints, restores and restarts run code inside it (CRIU's
// parasite during a dump, its restorer and the resumed process's first
// calls after a restore, a fresh process's start-up after a restart). The
// agent (migrate/node) reports each step through a Func; the sensor
// (sensor.Monitor), in the same process, asks a Log whether an epoch
// overlaps one and marks the epoch's events. The package imports neither,
// so that neither imports the other.
package intervene

import (
	"sync"
	"time"
)

// Kinds of interventions.
const (
	Checkpoint = "checkpoint" // CRIU dumps the container (its parasite runs inside it)
	Restore    = "restore"    // CRIU restores it (also a staged copy's start, lazily or not)
	Restart    = "restart"    // its task is killed and started afresh
)

// ByAgent is who intervened: this host's node agent.
const ByAgent = "agent"

// DefaultSettle is how long after an intervention ends an epoch that begins
// still counts as overlapping it: a restored process's first calls (its
// interrupted calls restarting, reconnections) and the sensor's watch of a
// restored copy's new cgroup come just after the step returns.
const DefaultSettle = 2 * time.Second

// Func is called by the agent just before a step that perturbs container
// id, with the step's kind; the step calls end once it is over. A nil Func
// records nothing.
type Func func(id, kind string) (end func())

// Begin calls f, or does nothing if f is nil; end is never nil.
func (f Func) Begin(id, kind string) (end func()) {
	if f == nil {
		return func() {}
	}
	if end = f(id, kind); end == nil {
		return func() {}
	}
	return end
}

// Window is one intervention on a container. End is zero while it runs.
type Window struct {
	ID, Kind, By string
	Start, End   time.Time
}

// meets says whether [from, to] meets w extended by settle after its end
// (an open window extends to the future).
func (w Window) meets(from, to time.Time, settle time.Duration) bool {
	if to.Before(w.Start) {
		return false
	}
	return w.End.IsZero() || !from.After(w.End.Add(settle))
}

// kept is how many windows a container keeps: enough for the epochs the
// sensor has not yet scored, which are seconds old at most.
const kept = 16

// forget is how long after its last window ends a container's record is
// dropped.
const forget = 10 * time.Minute

// Log records interventions, by container id, and answers which one an
// epoch's interval meets. It is safe for concurrent use.
type Log struct {
	settle time.Duration
	now    func() time.Time

	mu    sync.Mutex
	byID  map[string][]*Window
	begun int // Begin calls since the last sweep
}

// Option tunes a Log.
type Option func(*Log)

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(l *Log) { l.now = now } }

// NewLog returns a log whose windows extend settle past their end
// (negative: DefaultSettle).
func NewLog(settle time.Duration, opts ...Option) *Log {
	if settle < 0 {
		settle = DefaultSettle
	}
	l := &Log{settle: settle, now: time.Now, byID: map[string][]*Window{}}
	for _, o := range opts {
		o(l)
	}
	return l
}

// Settle is how long past its end an intervention still marks epochs.
func (l *Log) Settle() time.Duration { return l.settle }

// Begin records that the agent starts a step of kind on container id; end
// records that it is over. It is a Func.
func (l *Log) Begin(id, kind string) (end func()) {
	w := &Window{ID: id, Kind: kind, By: ByAgent, Start: l.now()}
	l.mu.Lock()
	ws := append(l.byID[id], w)
	if len(ws) > kept {
		// Drop the oldest ended window; open ones stay.
		for i, o := range ws {
			if !o.End.IsZero() {
				ws = append(ws[:i:i], ws[i+1:]...)
				break
			}
		}
	}
	l.byID[id] = ws
	if l.begun++; l.begun >= 256 {
		l.begun = 0
		l.sweepLocked(w.Start)
	}
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t := l.now()
			l.mu.Lock()
			w.End = t
			l.mu.Unlock()
		})
	}
}

// sweepLocked forgets containers whose every window ended long ago.
func (l *Log) sweepLocked(now time.Time) {
	for id, ws := range l.byID {
		old := true
		for _, w := range ws {
			if w.End.IsZero() || now.Sub(w.End) < forget {
				old = false
				break
			}
		}
		if old {
			delete(l.byID, id)
		}
	}
}

// Overlap returns the latest-started intervention on container id that
// the interval [from, to] meets, the settle margin included.
func (l *Log) Overlap(id string, from, to time.Time) (Window, bool) {
	if l == nil {
		return Window{}, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var best *Window
	for _, w := range l.byID[id] {
		if w.meets(from, to, l.settle) && (best == nil || w.Start.After(best.Start)) {
			best = w
		}
	}
	if best == nil {
		return Window{}, false
	}
	return *best, true
}
