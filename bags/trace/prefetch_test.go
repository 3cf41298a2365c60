package trace

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/escape-mtd/escape/bags/syscalls"
)

// countingReader yields n numbered events, then err forever.
type countingReader struct {
	n, i int
	err  error
}

func (c *countingReader) Meta() Meta { return Meta{Arch: syscalls.I386, Name: "counted"} }

func (c *countingReader) Next() (Event, error) {
	if c.i == c.n {
		return Event{}, c.err
	}
	c.i++
	return Event{Nr: uint16(c.i), TID: uint32(c.i), TS: int64(c.i)}, nil
}

func TestPrefetcherKeepsOrderAndError(t *testing.T) {
	bad := errors.New("line 7: broken")
	// Sizes around the block boundary, where a hand-over could drop or repeat.
	for _, n := range []int{0, 1, prefetchBlock - 1, prefetchBlock, prefetchBlock + 1, 3*prefetchBlock*prefetchDepth + 5} {
		for _, end := range []error{io.EOF, bad} {
			p := NewPrefetcher(context.Background(), &countingReader{n: n, err: end})
			if m := p.Meta(); m.Name != "counted" || m.Arch != syscalls.I386 {
				t.Fatalf("meta %+v", m)
			}
			for i := 1; i <= n; i++ {
				ev, err := p.Next()
				if err != nil || ev != (Event{Nr: uint16(i), TID: uint32(i), TS: int64(i)}) {
					t.Fatalf("n=%d: event %d: %+v, %v", n, i, ev, err)
				}
			}
			for range 2 { // the error stays
				if _, err := p.Next(); !errors.Is(err, end) {
					t.Fatalf("n=%d: end %v, want %v", n, err, end)
				}
			}
			p.Close()
		}
	}
}

// endlessReader never ends; it counts the events it produced.
type endlessReader struct{ i int }

func (e *endlessReader) Meta() Meta { return Meta{} }

func (e *endlessReader) Next() (Event, error) { e.i++; return Event{Nr: uint16(e.i)}, nil }

func TestPrefetcherCancelAndClose(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	src := &endlessReader{}
	p := NewPrefetcher(ctx, src)
	for i := 1; i <= 10; i++ {
		if ev, err := p.Next(); err != nil || ev.Nr != uint16(i) {
			t.Fatalf("event %d: %+v %v", i, ev, err)
		}
	}
	cancel()
	// The blocks already read still come out, in order, then the cancellation.
	want := uint16(11)
	for {
		ev, err := p.Next()
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("after cancel: %v", err)
			}
			break
		}
		if ev.Nr != want {
			t.Fatalf("after cancel: event %d, want %d", ev.Nr, want)
		}
		want++
	}
	p.Close() // returns: the goroutine has stopped
	if read := src.i; read > (prefetchDepth+2)*prefetchBlock+10 {
		t.Fatalf("read %d events ahead, more than the %d blocks bound", read, prefetchDepth+2)
	}

	// Close without draining, while the reader is blocked on a full queue.
	p = NewPrefetcher(context.Background(), &endlessReader{})
	if _, err := p.Next(); err != nil {
		t.Fatal(err)
	}
	p.Close()
}
