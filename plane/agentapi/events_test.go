package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/sensor/events"
)

func newOutbox(t testing.TB, opts ...OutboxOption) *Outbox {
	t.Helper()
	o, err := NewOutbox(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func emit(t testing.TB, o *Outbox, from, n int, pad int) {
	t.Helper()
	if err := emitErr(o, from, n, pad); err != nil {
		t.Fatal(err)
	}
}

// emitErr queues events from..from+n-1, each message padded with pad dots.
func emitErr(o *Outbox, from, n int, pad int) error {
	for i := from; i < from+n; i++ {
		e := events.Event{Schema: 1, Time: time.Unix(1_700_000_000, int64(i)).UTC(), Type: "test", Severity: "info", Sensor: "h1",
			Message: fmt.Sprintf("event %d%s", i, strings.Repeat(".", pad))}
		if err := o.Emit(context.Background(), e); err != nil {
			return err
		}
	}
	return nil
}

// consumer collects what a subscription delivers and checks, batch by
// batch, that sequence numbers only grow and that every gap is the
// batch's Dropped count.
type consumer struct {
	mu       sync.Mutex
	seqs     []uint64 // acknowledged (handle returned nil)
	msgs     []string
	dropped  uint64
	last     uint64
	batches  int
	problems []string
	// reject, when it returns true for a batch, fails it (not acked).
	reject func(b Batch) bool
	// hold, when set, is waited on before the first batch is handled.
	hold    chan struct{}
	entered chan struct{} // closed once the first batch waits on hold
	held    bool
}

var errReject = errors.New("consumer rejects this batch")

func (c *consumer) handle(b Batch) error {
	if c.hold != nil && !c.held {
		c.held = true
		close(c.entered)
		<-c.hold
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reject != nil && c.reject(b) {
		return errReject
	}
	c.batches++
	if len(b.Events) == 0 && b.Dropped == 0 {
		c.problems = append(c.problems, "an empty batch")
	}
	next := c.last + b.Dropped + 1
	for _, e := range b.Events {
		if e.Seq != next {
			c.problems = append(c.problems, fmt.Sprintf("seq %d after %d with %d dropped, want %d", e.Seq, c.last, b.Dropped, next))
		}
		var ev events.Event
		if err := json.Unmarshal(e.JSON, &ev); err != nil {
			c.problems = append(c.problems, fmt.Sprintf("seq %d: %v", e.Seq, err))
		}
		c.seqs = append(c.seqs, e.Seq)
		c.msgs = append(c.msgs, strings.TrimRight(ev.Message, "."))
		c.last, next = e.Seq, e.Seq+1
	}
	if len(b.Events) == 0 {
		c.last += b.Dropped
	}
	c.dropped += b.Dropped
	return nil
}

func (c *consumer) count() (n int, dropped uint64, last uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seqs), c.dropped, c.last
}

func (c *consumer) check(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.problems {
		t.Error(p)
	}
}

// subscribe runs c.Events until stop returns true (polled), then ends it.
func subscribe(t testing.TB, cl *Client, cur *Cursor, con *consumer, stop func() bool) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- cl.Events(ctx, cur, con.handle) }()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-errc:
			return err
		case <-tick.C:
			if stop() {
				cancel()
				return <-errc
			}
		}
	}
}

func held(o *Outbox) int { n, _, _ := o.Stats(); return n }

// Events queued before and during a subscription arrive in order, once,
// numbered from 1; acknowledgements empty the outbox and move the cursor.
func TestEventsInOrderWithAcks(t *testing.T) {
	p := newPKI(t)
	ob := newOutbox(t)
	a := startAgent(t, p, idH1, agentOpts{outbox: ob})
	c := dial(t, newSource(t, p.files(t, idPlane, nil)), a)
	emit(t, ob, 1, 700, 0)
	var once sync.Once
	con := &consumer{}
	var cur Cursor
	err := subscribe(t, c, &cur, con, func() bool {
		n, _, _ := con.count()
		if n >= 300 {
			once.Do(func() { go emitErr(ob, 701, 800, 0) }) // live, while streaming
		}
		return n == 1500 && held(ob) == 0
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("events ended with %v", err)
	}
	con.check(t)
	if n, dropped, last := con.count(); n != 1500 || dropped != 0 || last != 1500 {
		t.Fatalf("got %d events up to %d, %d dropped: want 1500, none dropped", n, last, dropped)
	}
	for i, m := range con.msgs {
		if want := fmt.Sprintf("event %d", i+1); m != want {
			t.Fatalf("event %d is %q, want %q", i+1, m, want)
		}
	}
	if cur.Instance != ob.instance || cur.Seq != 1500 {
		t.Fatalf("cursor %+v, want %s/1500", cur, ob.instance)
	}
	if n, b, d := ob.Stats(); n != 0 || b != 0 || d != 0 {
		t.Fatalf("outbox holds %d events, %d bytes, %d dropped after every ack", n, b, d)
	}
}

// A consumer that fails a batch gets it again when it subscribes again,
// on a new connection, from its cursor: nothing acknowledged comes twice,
// nothing is lost.
func TestEventsResumeFromCursor(t *testing.T) {
	p := newPKI(t)
	ob := newOutbox(t)
	a := startAgent(t, p, idH1, agentOpts{outbox: ob})
	plane := newSource(t, p.files(t, idPlane, nil))
	emit(t, ob, 1, 300, 0) // two batches: 256, then 44
	var cur Cursor
	con := &consumer{}
	con.reject = func(b Batch) bool { return len(con.seqs) >= 256 }
	err := subscribe(t, dial(t, plane, a), &cur, con, func() bool { return false })
	if !errors.Is(err, errReject) {
		t.Fatalf("first subscription ended with %v, want the handler's error", err)
	}
	if n, _, _ := con.count(); n != 256 || cur.Seq != 256 {
		t.Fatalf("first subscription: %d events, cursor %d: want 256 acked", n, cur.Seq)
	}
	eventually(t, "the ack forgets the first batch", func() bool { return held(ob) == 44 })

	// The plane reconnects (a new Client: a new connection) and more
	// events have come meanwhile.
	emit(t, ob, 301, 100, 0)
	con.reject = nil
	err = subscribe(t, dial(t, plane, a), &cur, con, func() bool { n, _, _ := con.count(); return n == 400 && held(ob) == 0 })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("second subscription ended with %v", err)
	}
	con.check(t)
	for i, s := range con.seqs {
		if s != uint64(i+1) {
			t.Fatalf("acknowledged event %d has seq %d: lost or duplicated events", i, s)
		}
	}
	if cur.Seq != 400 {
		t.Fatalf("cursor %d, want 400", cur.Seq)
	}
}

// A cursor of another outbox instance (the agent restarted) starts from
// the oldest event held, numbered afresh, and reports what the new
// instance had lost before.
func TestEventsNewInstance(t *testing.T) {
	p := newPKI(t)
	ob := newOutbox(t, WithOutboxLimits(10, 1<<20))
	a := startAgent(t, p, idH1, agentOpts{outbox: ob})
	emit(t, ob, 1, 25, 0) // 1..15 dropped, 16..25 held
	cur := Cursor{Instance: "0123456789abcdef", Seq: 9999}
	con := &consumer{}
	_ = subscribe(t, dial(t, newSource(t, p.files(t, idPlane, nil)), a), &cur, con, func() bool {
		n, _, _ := con.count()
		return n == 10
	})
	con.check(t)
	if n, dropped, last := con.count(); n != 10 || dropped != 15 || last != 25 {
		t.Fatalf("%d events up to %d, %d dropped: want 10 up to 25, 15 dropped", n, last, dropped)
	}
	if cur.Instance != ob.instance {
		t.Fatalf("cursor instance %q, want the new %q", cur.Instance, ob.instance)
	}
}

// Under a flood far beyond its count bound, the outbox holds the newest
// events only, its memory stays bounded, and the consumer is told how
// many it lost.
func TestOutboxFloodByCount(t *testing.T) {
	const limit, total = 100, 100_000
	ob := newOutbox(t, WithOutboxLimits(limit, 16<<20))
	maxCap := 0
	for i := 0; i < total; i++ {
		emit(t, ob, i+1, 1, 0)
		if n := held(ob); n > limit {
			t.Fatalf("after %d events the outbox holds %d > %d", i+1, n, limit)
		}
		ob.mu.Lock()
		maxCap = max(maxCap, cap(ob.queue))
		ob.mu.Unlock()
	}
	n, bytes, dropped := ob.Stats()
	if n != limit || dropped != total-limit {
		t.Fatalf("holds %d, dropped %d: want %d and %d", n, dropped, limit, total-limit)
	}
	if maxCap > 4*limit {
		t.Fatalf("the queue's backing array reached %d slots for %d events: not bounded", maxCap, limit)
	}
	t.Logf("held %d events, %d bytes, max capacity %d, dropped %d", n, bytes, maxCap, dropped)

	p := newPKI(t)
	a := startAgent(t, p, idH1, agentOpts{outbox: ob})
	con := &consumer{}
	var cur Cursor
	_ = subscribe(t, dial(t, newSource(t, p.files(t, idPlane, nil)), a), &cur, con, func() bool {
		n, _, _ := con.count()
		return n == limit
	})
	con.check(t)
	if n, d, last := con.count(); n != limit || d != total-limit || last != total {
		t.Fatalf("consumer: %d events up to %d, %d dropped: want %d up to %d, %d dropped", n, last, d, limit, total, total-limit)
	}
}

// The byte bound holds under a flood of larger events, and an event over
// a sixteenth of it is dropped, counted, and reported.
func TestOutboxFloodByBytes(t *testing.T) {
	const maxBytes, total = 64 << 10, 20_000
	ob := newOutbox(t, WithOutboxLimits(1<<20, maxBytes))
	for i := 1; i <= total; i++ {
		emit(t, ob, i, 1, 1000)
		if _, b, _ := ob.Stats(); b > maxBytes {
			t.Fatalf("after %d events the outbox holds %d bytes > %d", i, b, maxBytes)
		}
	}
	emit(t, ob, total+1, 1, maxBytes/16) // too large: dropped at once
	emit(t, ob, total+2, 1, 0)
	n, b, dropped := ob.Stats()
	if uint64(n)+dropped != total+2 || b > maxBytes || n < maxBytes/1200 {
		t.Fatalf("holds %d events (%d bytes), dropped %d, of %d", n, b, dropped, total+2)
	}
	ob.mu.Lock()
	for _, q := range ob.queue {
		if strings.Contains(string(q.json), fmt.Sprintf("event %d.", total+1)) {
			t.Error("the oversized event is queued")
		}
	}
	sum := 0
	for _, q := range ob.queue {
		sum += len(q.json)
	}
	if sum != b {
		t.Errorf("bytes accounted %d, queued %d", b, sum)
	}
	ob.mu.Unlock()

	p := newPKI(t)
	a := startAgent(t, p, idH1, agentOpts{outbox: ob})
	con := &consumer{}
	var cur Cursor
	_ = subscribe(t, dial(t, newSource(t, p.files(t, idPlane, nil)), a), &cur, con, func() bool {
		_, _, last := con.count()
		return last == total+2
	})
	con.check(t)
	if got, d, _ := con.count(); got != n || d != dropped {
		t.Fatalf("consumer: %d events, %d dropped; the outbox held %d and dropped %d", got, d, n, dropped)
	}
	if con.seqs[len(con.seqs)-2] != total || con.seqs[len(con.seqs)-1] != total+2 {
		t.Fatalf("the last events are %v: want %d, then %d after the dropped oversized one", con.seqs[len(con.seqs)-2:], total, total+2)
	}
}

// A flood while the consumer is busy: what it misses arrives as Dropped
// in the batch after, so events plus drops account for every event.
func TestEventsDropsReportedWhileStreaming(t *testing.T) {
	const limit, total = 50, 20_000
	p := newPKI(t)
	ob := newOutbox(t, WithOutboxLimits(limit, 1<<20))
	a := startAgent(t, p, idH1, agentOpts{outbox: ob})
	emit(t, ob, 1, 1, 0)
	con := &consumer{hold: make(chan struct{}), entered: make(chan struct{})}
	var cur Cursor
	go func() {
		// The consumer sits on its first batch while the sensor floods.
		<-con.entered
		_ = emitErr(ob, 2, total-1, 0)
		close(con.hold)
	}()
	_ = subscribe(t, dial(t, newSource(t, p.files(t, idPlane, nil)), a), &cur, con, func() bool {
		_, _, last := con.count()
		return last == total
	})
	con.check(t)
	n, d, last := con.count()
	if uint64(n)+d != total || last != total || d == 0 {
		t.Fatalf("%d events + %d dropped, up to %d: want %d in all, some dropped", n, d, last, total)
	}
	t.Logf("%d events delivered, %d reported dropped", n, d)
}

// An agent whose sensor stops ends the stream as unreachable (the plane
// subscribes again); one with no sensor refuses it.
func TestEventsSensorStopped(t *testing.T) {
	p := newPKI(t)
	plane := newSource(t, p.files(t, idPlane, nil))
	ob := newOutbox(t)
	a := startAgent(t, p, idH1, agentOpts{outbox: ob})
	emit(t, ob, 1, 3, 0)
	con := &consumer{}
	var cur Cursor
	go func() {
		eventually(t, "three events", func() bool { n, _, _ := con.count(); return n == 3 })
		ob.Close()
	}()
	if err := subscribe(t, dial(t, plane, a), &cur, con, func() bool { return false }); !errors.Is(err, migrate.ErrUnreachable) {
		t.Fatalf("stream of a stopped sensor: %v, want ErrUnreachable", err)
	}
	b := startAgent(t, p, idH2, agentOpts{})
	err := dial(t, plane, b).Events(testCtx(t), &Cursor{}, func(Batch) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "FailedPrecondition") {
		t.Fatalf("events of an agent without a sensor: %v", err)
	}
}

// An agent shutting down does not wait on the plane's event stream,
// which never ends by itself.
func TestServeStopsWithEventsSubscriber(t *testing.T) {
	p := newPKI(t)
	ob := newOutbox(t)
	a := startAgent(t, p, idH1, agentOpts{outbox: ob})
	emit(t, ob, 1, 1, 0)
	con := &consumer{}
	var cur Cursor
	errc := make(chan error, 1)
	go func() {
		errc <- dial(t, newSource(t, p.files(t, idPlane, nil)), a).Events(context.Background(), &cur, con.handle)
	}()
	eventually(t, "the first event", func() bool { n, _, _ := con.count(); return n == 1 })
	start := time.Now()
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Serve took %v to stop with a subscriber", took)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, migrate.ErrUnreachable) {
			t.Fatalf("the subscriber's stream ended with %v, want ErrUnreachable (subscribe again)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the subscriber's stream did not end")
	}
}

// Large events (each well within the outbox's bounds) still reach the
// plane: a batch stays within what a gRPC message may carry.
func TestEventsLargeBatches(t *testing.T) {
	p := newPKI(t)
	ob := newOutbox(t) // default bounds: 4096 events, 16 MiB
	a := startAgent(t, p, idH1, agentOpts{outbox: ob})
	const n = 300
	emit(t, ob, 1, n, 40<<10) // 40 KiB each: 12 MiB in all
	if held, _, dropped := ob.Stats(); held != n || dropped != 0 {
		t.Fatalf("held %d, dropped %d", held, dropped)
	}
	con := &consumer{}
	var cur Cursor
	err := subscribe(t, dial(t, newSource(t, p.files(t, idPlane, nil)), a), &cur, con, func() bool {
		k, _, _ := con.count()
		return k == n
	})
	con.check(t)
	if k, d, _ := con.count(); k != n || d != 0 {
		t.Fatalf("%d of %d large events delivered, %d dropped; the stream ended with %v", k, n, d, err)
	}
}

// However large the byte bound, one event never exceeds what a batch may
// carry.
func TestOutboxEventSizeCap(t *testing.T) {
	ob := newOutbox(t, WithOutboxLimits(10, 1<<30))
	emit(t, ob, 1, 1, maxBatchBytes) // over 1 MiB once encoded
	emit(t, ob, 2, 1, maxBatchBytes-4096)
	if held, _, dropped := ob.Stats(); held != 1 || dropped != 1 {
		t.Fatalf("held %d, dropped %d: want the oversized one dropped, the other held", held, dropped)
	}
}
