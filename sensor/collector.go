package sensor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Collector drains the probe's ring buffer, resolves epochs into exact bags
// and hands them, in order, to a handler. Run it in one goroutine.
type Collector struct {
	probe   *Probe
	asm     *Assembler
	handle  func(Epoch)
	log     *zap.Logger
	finals  chan *RawEpoch
	pending []pendingEpoch
	// DecodeErrors counts malformed records (never expected).
	DecodeErrors uint64
}

type pendingEpoch struct {
	raw   *RawEpoch
	since time.Time
}

// pendingGrace is how long an epoch whose hashes are not all known waits for
// their new-bag records. A new-bag record is output right after the call that
// made it, possibly behind the epoch another CPU closed meanwhile; past this
// grace the record was lost and the epoch is shipped degraded.
const pendingGrace = 200 * time.Millisecond

// pollEvery bounds how long Run blocks in the ring buffer.
const pollEvery = 50 * time.Millisecond

// NewCollector returns a collector feeding handle.
func NewCollector(p *Probe, handle func(Epoch), log *zap.Logger) *Collector {
	if log == nil {
		log = zap.NewNop()
	}
	return &Collector{probe: p, asm: NewAssembler(p.HashOf), handle: handle, log: log,
		finals: make(chan *RawEpoch, 64)}
}

// Assembler exposes the dictionary and its counters (read from Run's goroutine
// or after it returned).
func (c *Collector) Assembler() *Assembler { return c.asm }

// Unwatch stops watching cgid; its partial epoch is delivered through the
// handler after every earlier record of the container.
func (c *Collector) Unwatch(ctx context.Context, cgid uint64) error {
	e, err := c.probe.Unwatch(cgid)
	if err != nil || e == nil {
		return err
	}
	select {
	case c.finals <- e:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("unwatch cgroup %d: %w", cgid, ctx.Err())
	}
}

// Run drains until ctx ends.
func (c *Collector) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			c.drainRing(time.Now())
			c.flushPending(true)
			return nil
		case fe := <-c.finals:
			// Everything the container shipped before it left is in the
			// ring already: consume it first, then its last epoch.
			c.drainRing(time.Now())
			c.enqueue(fe)
			c.flushPending(false)
			continue
		default:
		}
		rec, err := c.probe.ReadRecord(time.Now().Add(pollEvery))
		switch {
		case errors.Is(err, ErrTimeout):
			c.flushPending(true)
			continue
		case err != nil && errors.Is(err, errShort):
			c.DecodeErrors++
			c.log.Warn("malformed sensor record", zap.Error(err))
			continue
		case err != nil:
			return fmt.Errorf("collector: %w", err)
		}
		c.consume(rec)
	}
}

// drainRing consumes what the ring holds now, without waiting.
func (c *Collector) drainRing(deadline time.Time) {
	for {
		rec, err := c.probe.ReadRecord(deadline)
		if err != nil {
			if !errors.Is(err, ErrTimeout) {
				c.DecodeErrors++
			}
			return
		}
		c.consume(rec)
	}
}

func (c *Collector) consume(rec any) {
	switch r := rec.(type) {
	case *NewBag:
		if !c.asm.Learn(r) {
			c.log.Warn("bag hash rejected", zap.Uint64("hash", r.Hash), zap.Uint16s("window", r.Window),
				zap.Uint64("collisions", c.asm.Collisions), zap.Uint64("bad_hashes", c.asm.BadHashes))
		}
	case *RawEpoch:
		c.enqueue(r)
	case *RemarkRequest:
		if err := c.probe.Remark(r); err != nil {
			c.log.Warn("mark a watched thread", zap.Int32("tid", r.Tid), zap.Uint32("slot", r.Slot), zap.Error(err))
		}
	}
	c.flushPending(false)
}

func (c *Collector) enqueue(e *RawEpoch) {
	c.pending = append(c.pending, pendingEpoch{raw: e, since: time.Now()})
}

// flushPending hands over queued epochs in arrival order, stopping at the
// first one still waiting for a new-bag record unless it is overdue or force
// is set (the ring is idle: nothing more is coming).
func (c *Collector) flushPending(force bool) {
	i := 0
	for ; i < len(c.pending); i++ {
		pe := c.pending[i]
		if !c.asm.Known(pe.raw) && !force && time.Since(pe.since) < pendingGrace {
			break
		}
		c.handle(c.asm.Build(pe.raw))
	}
	c.pending = append(c.pending[:0], c.pending[i:]...)
}
