package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/bags/trace"
)

// timing replays a stamped trace as the live sensor saw it, and selects a
// part of it: train on a recording's first minutes, score the rest.
type timing struct {
	flush       time.Duration // close an epoch this long after its first call (0: by count only)
	from, until time.Duration // epochs that start in [from, until) after the trace's first call
}

func (t timing) stamped() bool { return t.flush > 0 || t.from > 0 || t.until > 0 }

func (t timing) validate() error {
	if t.flush < 0 || t.from < 0 || t.until < 0 {
		return fmt.Errorf("--flush, --from and --until must not be negative")
	}
	if t.until > 0 && t.until <= t.from {
		return fmt.Errorf("--until %v is not after --from %v", t.until, t.from)
	}
	return nil
}

// feed runs one trace through a fresh window (each file is its own stream)
// and calls fn for every epoch, the final partial one included. With a
// timing that needs stamps, a call without one is an error, not a guess.
func feed(ctx context.Context, r trace.Reader, x *bags.Windower, tm timing, fn func(bags.Epoch) error) error {
	if err := tm.validate(); err != nil {
		return err
	}
	// Parsing overlaps with bagging and training: a text trace's parse costs
	// about as much as what is done with its events.
	pf := trace.NewPrefetcher(ctx, r)
	defer pf.Close()
	x.Reset()
	first := int64(0)       // the trace's first stamp
	epochStart := int64(-1) // the current epoch's first stamp; -1: no call in it yet
	emit := func(e bags.Epoch) error {
		start := epochStart
		epochStart = -1
		if tm.from > 0 && start-first < int64(tm.from) {
			return nil
		}
		return fn(e)
	}
	for i := 0; ; i++ {
		if i&0xFFFF == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		ev, err := pf.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if tm.stamped() {
			if ev.TS == 0 {
				return fmt.Errorf("call %d has no time stamp: --flush, --from and --until need a stamped trace", i+1)
			}
			if i == 0 {
				first = ev.TS
			}
			if tm.until > 0 && ev.TS-first >= int64(tm.until) {
				break
			}
			if tm.flush > 0 && epochStart >= 0 && ev.TS-epochStart >= int64(tm.flush) {
				if e, ok := x.Flush(); ok {
					if err := emit(e); err != nil {
						return err
					}
				}
				epochStart = -1
			}
			if epochStart < 0 {
				epochStart = ev.TS
			}
		}
		if e, ok := x.Push(ev.Nr); ok {
			if err := emit(e); err != nil {
				return err
			}
		}
	}
	if e, ok := x.Flush(); ok {
		return emit(e)
	}
	return nil
}
