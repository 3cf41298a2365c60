package agentapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/escape-mtd/escape/sensor/events"
)

// Outbox holds a host's sensor events until the plane has them. It is a
// sensor sink (events.Sink): the sensor never waits on the plane, and the
// plane reads the outbox through its Events stream, acknowledging what it
// has queued. Unacknowledged events are sent again after a reconnection,
// so a plane that restarts loses none that the outbox still holds.
//
// It is bounded by count and by bytes: under a flood, or while the plane
// is away for long, the oldest events go first, and the number lost is
// told to the plane with the next batch (EventBatch.dropped), because an
// epoch it never saw cannot count as clean.
type Outbox struct {
	instance  string
	maxEvents int
	maxBytes  int

	mu      sync.Mutex
	queue   []queued // oldest first
	bytes   int
	next    uint64 // sequence number of the next event
	dropped uint64 // events lost since the outbox started
	wake    chan struct{}
	closed  bool
}

type queued struct {
	seq  uint64
	json []byte
}

// OutboxOption tunes an Outbox.
type OutboxOption func(*Outbox)

// WithOutboxLimits bounds the events held (default 4096) and their bytes
// (default 16 MiB).
func WithOutboxLimits(events, bytes int) OutboxOption {
	return func(o *Outbox) { o.maxEvents, o.maxBytes = events, bytes }
}

// NewOutbox returns an empty outbox with a new instance name.
func NewOutbox(opts ...OutboxOption) (*Outbox, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("outbox instance: %w", err)
	}
	o := &Outbox{instance: hex.EncodeToString(b[:]), maxEvents: 4096, maxBytes: 16 << 20, next: 1, wake: make(chan struct{})}
	for _, f := range opts {
		f(o)
	}
	if o.maxEvents < 1 || o.maxBytes < 4096 {
		return nil, fmt.Errorf("outbox limits %d events, %d bytes: want at least 1 event and 4096 bytes", o.maxEvents, o.maxBytes)
	}
	return o, nil
}

// Emit queues e. An event larger than a sixteenth of the byte bound (or
// than maxBatchBytes, what one batch to the plane may carry) is counted as
// dropped rather than let it push out many others.
func (o *Outbox) Emit(_ context.Context, e events.Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("outbox: encode event: %w", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return fmt.Errorf("outbox: closed")
	}
	seq := o.next
	o.next++
	if len(b) > min(o.maxBytes/16, maxBatchBytes) {
		o.dropped++
		return nil
	}
	o.queue = append(o.queue, queued{seq: seq, json: b})
	o.bytes += len(b)
	for len(o.queue) > o.maxEvents || o.bytes > o.maxBytes {
		o.bytes -= len(o.queue[0].json)
		o.queue[0] = queued{}
		o.queue = o.queue[1:]
		o.dropped++
	}
	close(o.wake)
	o.wake = make(chan struct{})
	return nil
}

// Close ends every stream's wait; events still held are lost with the
// process.
func (o *Outbox) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed {
		o.closed = true
		close(o.wake)
	}
	return nil
}

// Stats reports what the outbox holds and has lost.
func (o *Outbox) Stats() (held int, bytes int, dropped uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.queue), o.bytes, o.dropped
}

// ack forgets every event up to seq.
func (o *Outbox) ack(seq uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for n < len(o.queue) && o.queue[n].seq <= seq {
		o.bytes -= len(o.queue[n].json)
		o.queue[n] = queued{}
		n++
	}
	o.queue = o.queue[n:]
}

// maxBatchBytes bounds the events of one batch. A single event is at most
// a sixteenth of the outbox's byte bound (1 MiB by default).
const maxBatchBytes = 1 << 20

// batch returns up to max events after seq, how many were lost between
// seq and the first of them, and a channel closed when more arrive.
func (o *Outbox) batch(after uint64, max int) (out []queued, gap uint64, wake <-chan struct{}, closed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	i := 0
	for i < len(o.queue) && o.queue[i].seq <= after {
		i++
	}
	first := o.next // what the next event would be
	if i < len(o.queue) {
		first = o.queue[i].seq
	}
	if first > after+1 {
		gap = first - after - 1
	}
	// A batch holds consecutive events only: an event dropped on arrival
	// (too large) leaves a hole in the queue, which the next batch then
	// reports as its gap.
	// And it stays well within a gRPC message (4 MiB by default at the
	// plane): at most maxBatchBytes of events, and at least one.
	end, size := i, 0
	for end < len(o.queue) && end-i < max && (end == i || o.queue[end].seq == o.queue[end-1].seq+1) {
		size += len(o.queue[end].json)
		if end > i && size > maxBatchBytes {
			break
		}
		end++
	}
	out = append(out, o.queue[i:end]...)
	return out, gap, o.wake, o.closed
}

// start says where a stream that acknowledged seq of instance begins: after
// seq if the instance is this outbox, else before its oldest event (the
// agent restarted: what the old instance held is gone, and the plane is
// told how much when this instance lost anything).
func (o *Outbox) start(instance string, seq uint64) (after uint64, lost uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if instance == o.instance {
		return seq, 0
	}
	if len(o.queue) > 0 {
		after = o.queue[0].seq - 1
	} else {
		after = o.next - 1
	}
	return after, after // events before the oldest held were never sent
}
