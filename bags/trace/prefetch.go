package trace

import (
	"context"
	"sync"
)

// Prefetcher reads another Reader ahead in its own goroutine, in blocks of
// events, so that parsing a text trace overlaps with what the caller does
// with the events (bagging and training take about as long as parsing).
// Events come out in exactly the source's order, and the source's error,
// io.EOF at a clean end, comes after every event read before it: nothing is
// lost or reordered. Memory is bounded: prefetchDepth blocks of
// prefetchBlock events. Call Close when done, also after an error.
type Prefetcher struct {
	ctx    context.Context
	meta   Meta
	full   chan eventBlock
	free   chan []Event
	cur    []Event
	pos    int
	err    error // the source's terminal error, returned once cur is drained
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type eventBlock struct {
	events []Event
	err    error // non-nil on the last block: what ended the source
}

const (
	prefetchBlock = 8192 // events per block: one hand-over per block keeps the channel cost per event negligible
	prefetchDepth = 4    // blocks in flight, so that neither side waits on a short stall of the other
)

// NewPrefetcher starts reading r ahead. Cancelling ctx stops it; Next then
// returns ctx's error after the events already read.
func NewPrefetcher(ctx context.Context, r Reader) *Prefetcher {
	ctx, cancel := context.WithCancel(ctx)
	p := &Prefetcher{
		ctx:    ctx,
		meta:   r.Meta(),
		full:   make(chan eventBlock, prefetchDepth),
		free:   make(chan []Event, prefetchDepth),
		cancel: cancel,
	}
	for range prefetchDepth {
		p.free <- make([]Event, 0, prefetchBlock)
	}
	p.wg.Add(1)
	go p.run(r)
	return p
}

func (p *Prefetcher) run(r Reader) {
	defer p.wg.Done()
	defer close(p.full)
	for {
		var buf []Event
		select {
		case buf = <-p.free:
		case <-p.ctx.Done():
			return
		}
		buf = buf[:0]
		var err error
		for len(buf) < cap(buf) {
			var ev Event
			if ev, err = r.Next(); err != nil {
				break
			}
			buf = append(buf, ev)
		}
		if err == nil {
			err = p.ctx.Err()
		}
		select {
		case p.full <- eventBlock{events: buf, err: err}:
		case <-p.ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// Meta reports the source's Meta, read when the Prefetcher was made.
func (p *Prefetcher) Meta() Meta { return p.meta }

// Next returns the source's next event, or its error once every event read
// before that error has been returned.
func (p *Prefetcher) Next() (Event, error) {
	for p.pos == len(p.cur) {
		if p.err != nil {
			return Event{}, p.err
		}
		if p.cur != nil {
			p.free <- p.cur // never blocks: free holds every block not in use
			p.cur, p.pos = nil, 0
		}
		b, ok := <-p.full
		if !ok { // run stopped on cancellation before it could hand a block over
			p.err = p.ctx.Err()
			continue
		}
		p.cur, p.pos, p.err = b.events, 0, b.err
	}
	ev := p.cur[p.pos]
	p.pos++
	return ev, nil
}

// Close stops the read-ahead and waits for its goroutine, which first
// finishes the source's Next call in progress. It does not close the source.
func (p *Prefetcher) Close() {
	p.cancel()
	p.wg.Wait()
}
