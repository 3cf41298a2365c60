package agentapi

import (
	"context"
	"errors"
	"io"

	"github.com/escape-mtd/escape/plane/agentapi/agentpb"
)

// Cursor is where a subscriber stands in one agent's outbox: the last
// event it acknowledged. Its zero value starts from the oldest event held.
type Cursor struct {
	Instance string
	Seq      uint64
}

// Batch is what the plane gets from one agent at a time.
type Batch struct {
	Events []Event
	// Dropped counts the events lost before these (see Outbox).
	Dropped uint64
}

// Event is one sensor event, in its JSON schema (sensor/events).
type Event struct {
	Seq  uint64
	JSON []byte
}

// Events subscribes to the agent's sensor events from cur, calls handle
// with each batch in order, and acknowledges a batch once handle returned
// nil (cur moves with it). It returns when ctx ends, the stream breaks
// (migrate.ErrUnreachable: subscribe again), or handle fails (its error;
// the batch is not acknowledged and comes again).
func (c *Client) Events(ctx context.Context, cur *Cursor, handle func(Batch) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.api.Events(ctx)
	if err != nil {
		return c.err("events", err)
	}
	if err := stream.Send(&agentpb.EventAck{Seq: cur.Seq, Instance: cur.Instance}); err != nil {
		return c.err("events", err)
	}
	for {
		b, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return c.err("events", errors.New("the agent ended the stream"))
		}
		if err != nil {
			return c.err("events", err)
		}
		if b.GetInstance() != cur.Instance {
			cur.Instance, cur.Seq = b.GetInstance(), 0
		}
		out := Batch{Dropped: b.GetDropped()}
		for _, e := range b.GetEvents() {
			out.Events = append(out.Events, Event{Seq: e.GetSeq(), JSON: e.GetJson()})
		}
		if err := handle(out); err != nil {
			return err
		}
		if n := len(out.Events); n > 0 {
			cur.Seq = out.Events[n-1].Seq
			if err := stream.Send(&agentpb.EventAck{Seq: cur.Seq, Instance: cur.Instance}); err != nil {
				return c.err("events", err)
			}
		}
	}
}
