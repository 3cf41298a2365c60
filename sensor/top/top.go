package top

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/escape-mtd/escape/sensor"
)

// Sort keys (also the interactive keys of `escape-sensor top`).
const (
	ByName  = 'n'
	ByRate  = 'r'
	ByMism  = 'm'
	ByDB    = 'd'
	ByDrops = 'x'
	ByState = 's'
)

// ValidSort reports whether k is a sort key.
func ValidSort(k rune) bool { return strings.ContainsRune("nrmdxs", k) }

// View keeps the previous sample to turn cumulative calls into a rate.
type View struct {
	prev     map[string]uint64
	prevTime time.Time
	Sort     rune
}

// NewView returns a view sorted by key (ByRate if invalid).
func NewView(key rune) *View {
	if !ValidSort(key) {
		key = ByRate
	}
	return &View{prev: map[string]uint64{}, Sort: key}
}

type line struct {
	r    sensor.Row
	rate float64
}

// Render formats one frame for a terminal width (minimum 80).
func (v *View) Render(host string, now time.Time, rows []sensor.Row, width int) string {
	width = max(width, 80)
	dt := now.Sub(v.prevTime).Seconds()
	ls := make([]line, len(rows))
	next := make(map[string]uint64, len(rows))
	for i, r := range rows {
		ls[i].r = r
		if p, ok := v.prev[r.Identity]; ok && dt > 0 && r.Stats.Calls >= p {
			ls[i].rate = float64(r.Stats.Calls-p) / dt
		}
		next[r.Identity] = r.Stats.Calls
	}
	v.prev, v.prevTime = next, now
	slices.SortStableFunc(ls, func(a, b line) int {
		var c int
		switch v.Sort {
		case ByRate:
			c = cmp.Compare(b.rate, a.rate)
		case ByMism:
			c = cmp.Compare(b.r.Stats.LastMismatches, a.r.Stats.LastMismatches)
		case ByDB:
			c = cmp.Compare(b.r.Database, a.r.Database)
		case ByDrops:
			c = cmp.Compare(b.r.Stats.Drops, a.r.Stats.Drops)
		case ByState:
			c = cmp.Compare(a.r.State, b.r.State)
		}
		if c == 0 {
			c = cmp.Compare(a.r.Identity, b.r.Identity)
		}
		return c
	})
	// Fixed columns take 56; the container name gets the rest.
	nameW := width - 57 // lines of width-1 columns never wrap
	var sb strings.Builder
	title := fmt.Sprintf("escape-sensor top  %s  %s  %d containers  sort %c  (keys n r m d x s, q)",
		host, now.Format("15:04:05"), len(rows), v.Sort)
	fmt.Fprintln(&sb, clip(title, width-1))
	fmt.Fprintf(&sb, "%-*s %-4s %-9s %9s %6s %6s %7s %8s\n", nameW, "CONTAINER", "HOST", "STATE", "CALLS/S", "EPOCH",
		"MISM", "DB", "DROPS")
	for _, l := range ls {
		r := l.r
		fmt.Fprintf(&sb, "%-*s %-4s %-9s %9s %6d %6d %7d %8d\n", nameW, clip(r.Identity, nameW), clip(r.Host, 4),
			r.State, human(l.rate), r.Epoch, r.Stats.LastMismatches, r.Database, r.Stats.Drops)
	}
	return sb.String()
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 1 {
		return s[:n]
	}
	return s[:n-1] + "~"
}

func human(r float64) string {
	switch {
	case r >= 10e6:
		return fmt.Sprintf("%.0fM", r/1e6)
	case r >= 100e3:
		return fmt.Sprintf("%.0fk", r/1e3)
	}
	return fmt.Sprintf("%.0f", r)
}
