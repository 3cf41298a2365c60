package intervene_test

import (
	"sync"
	"testing"
	"time"

	"github.com/escape-mtd/escape/internal/intervene"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time     { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) at(d time.Duration) { c.mu.Lock(); c.t = t0.Add(d); c.mu.Unlock() }

var t0 = time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)

func ms(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

// TestOverlap: an interval meets a window when it starts before the
// window's end plus the settle margin and ends after the window's start;
// an open window meets everything after its start; containers are apart.
func TestOverlap(t *testing.T) {
	c := &clock{t: t0}
	l := intervene.NewLog(500*time.Millisecond, intervene.WithClock(c.now))
	c.at(1000 * time.Millisecond)
	end := l.Begin("web", intervene.Checkpoint)
	c.at(1200 * time.Millisecond)
	end()
	end() // idempotent: the end stays at 1.2 s
	c.at(5000 * time.Millisecond)
	for _, tc := range []struct {
		name     string
		id       string
		from, to int
		want     bool
	}{
		{"wholly before", "web", 0, 999, false},
		{"ends at the start", "web", 0, 1000, true},
		{"ends inside", "web", 900, 1100, true},
		{"inside", "web", 1050, 1150, true},
		{"covers it", "web", 500, 3000, true},
		{"starts in the settle margin", "web", 1600, 3000, true},
		{"starts at the margin's end", "web", 1700, 3000, true},
		{"starts after the margin", "web", 1701, 3000, false},
		{"another container", "db", 900, 1100, false},
	} {
		w, ok := l.Overlap(tc.id, ms(tc.from), ms(tc.to))
		if ok != tc.want {
			t.Errorf("%s: [%d, %d] ms: overlap %v, want %v", tc.name, tc.from, tc.to, ok, tc.want)
		}
		if ok && (w.Kind != intervene.Checkpoint || w.By != intervene.ByAgent || w.ID != "web" || !w.End.Equal(ms(1200))) {
			t.Errorf("%s: window %+v", tc.name, w)
		}
	}

	// An open window meets every later interval; the latest one started is
	// the one named.
	c.at(10 * time.Second)
	end2 := l.Begin("web", intervene.Restore)
	if w, ok := l.Overlap("web", t0.Add(time.Hour), t0.Add(2*time.Hour)); !ok || w.Kind != intervene.Restore || !w.End.IsZero() {
		t.Errorf("open restore: %+v %v", w, ok)
	}
	if w, ok := l.Overlap("web", ms(0), t0.Add(time.Hour)); !ok || w.Kind != intervene.Restore {
		t.Errorf("interval meeting both: %+v %v, want the restore", w, ok)
	}
	c.at(11 * time.Second)
	end2()
	if _, ok := l.Overlap("web", t0.Add(12*time.Second), t0.Add(13*time.Second)); ok {
		t.Error("ended restore still meets an interval past its margin")
	}
}

// TestLogKeepsRecentWindows: a container keeps its latest windows only, and
// a nil Func or Log is harmless.
func TestLogKeepsRecentWindows(t *testing.T) {
	c := &clock{t: t0}
	l := intervene.NewLog(0, intervene.WithClock(c.now))
	for i := range 100 {
		c.at(time.Duration(i) * time.Second)
		l.Begin("web", intervene.Checkpoint)()
	}
	if _, ok := l.Overlap("web", ms(0), ms(10)); ok {
		t.Error("the oldest window is still kept")
	}
	if _, ok := l.Overlap("web", t0.Add(99*time.Second), t0.Add(99*time.Second)); !ok {
		t.Error("the latest window is gone")
	}
	var f intervene.Func
	f.Begin("web", intervene.Checkpoint)()
	intervene.Func(func(string, string) func() { return nil }).Begin("web", intervene.Restart)()
	var nl *intervene.Log
	if _, ok := nl.Overlap("web", ms(0), ms(1)); ok {
		t.Error("nil log overlaps")
	}
	if intervene.NewLog(-1).Settle() != intervene.DefaultSettle {
		t.Error("negative settle is not the default")
	}
}

// TestLogConcurrent: the agent's steps and the sensor's lookups run on
// different goroutines (go test -race).
func TestLogConcurrent(t *testing.T) {
	l := intervene.NewLog(10 * time.Millisecond)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 500 {
				l.Begin([]string{"a", "b"}[g%2], intervene.Checkpoint)()
			}
		}()
		go func() {
			defer wg.Done()
			for range 500 {
				now := time.Now()
				l.Overlap("a", now.Add(-time.Millisecond), now)
			}
		}()
	}
	wg.Wait()
}
