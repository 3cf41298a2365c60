package sensor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	escbpf "github.com/escape-mtd/escape/bpf"
)

// Streamer is the per-event design: every call of a watched cgroup crosses
// the ring buffer on its own. `escape-sensor record` uses it to capture raw
// streams; the benchmark uses it as the sysdig-like baseline.
type Streamer struct {
	objs escbpf.StreamObjects
	lnk  link.Link
	rd   *ringbuf.Reader
}

// Call is one streamed call.
type Call struct {
	Nr   uint16
	TID  uint32
	TS   uint64 // CLOCK_MONOTONIC ns
	Cgid uint64
}

// LoadStreamer loads and attaches the streaming program with a ring of
// ringSize bytes (a power of two >= 4096; 0 keeps the default 8 MiB).
func LoadStreamer(ringSize int) (*Streamer, error) {
	spec, err := escbpf.LoadStream()
	if err != nil {
		return nil, fmt.Errorf("load streamer: %w", err)
	}
	if ringSize != 0 {
		if ringSize < 4096 || ringSize&(ringSize-1) != 0 {
			return nil, fmt.Errorf("load streamer: ring size %d is not a power of two >= 4096", ringSize)
		}
		spec.Maps["calls"].MaxEntries = uint32(ringSize)
	}
	s := &Streamer{}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		return nil, fmt.Errorf("load streamer: %w", err)
	}
	if s.rd, err = ringbuf.NewReader(s.objs.Calls); err != nil {
		s.objs.Close()
		return nil, fmt.Errorf("load streamer: %w", err)
	}
	if s.lnk, err = link.AttachTracing(link.TracingOptions{Program: s.objs.StreamEnter}); err != nil {
		s.rd.Close()
		s.objs.Close()
		return nil, fmt.Errorf("load streamer: attach: %w", err)
	}
	return s, nil
}

// Close detaches and frees the program.
func (s *Streamer) Close() error { return errors.Join(s.lnk.Close(), s.rd.Close(), s.objs.Close()) }

// Program is the attached program.
func (s *Streamer) Program() *ebpf.Program { return s.objs.StreamEnter }

// Watch starts streaming the cgroup's calls.
func (s *Streamer) Watch(cgid uint64) error {
	if err := s.objs.StreamWatched.Update(cgid, uint32(1), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("stream cgroup %d: %w", cgid, err)
	}
	if err := s.objs.StreamDrops.Update(cgid, uint64(0), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("stream cgroup %d: drop counter: %w", cgid, err)
	}
	return nil
}

// Unwatch stops streaming the cgroup.
func (s *Streamer) Unwatch(cgid uint64) error {
	if err := s.objs.StreamWatched.Delete(cgid); err != nil {
		return fmt.Errorf("unstream cgroup %d: %w", cgid, err)
	}
	return nil
}

// Drops reports the calls of cgid lost to a full ring.
func (s *Streamer) Drops(cgid uint64) (uint64, error) {
	var n uint64
	if err := s.objs.StreamDrops.Lookup(cgid, &n); err != nil {
		return 0, fmt.Errorf("stream drops of cgroup %d: %w", cgid, err)
	}
	return n, nil
}

// Read returns the next call, waiting until the deadline (zero: forever);
// ErrTimeout when none came.
func (s *Streamer) Read(deadline time.Time, rec *ringbuf.Record) (Call, error) {
	s.rd.SetDeadline(deadline)
	if err := s.rd.ReadInto(rec); err != nil {
		return Call{}, fmt.Errorf("read stream: %w", err)
	}
	b := rec.RawSample
	if len(b) < 32 || binary.LittleEndian.Uint32(b) != recCall {
		return Call{}, fmt.Errorf("stream record of %d bytes: %w", len(b), errShort)
	}
	le := binary.LittleEndian
	return Call{Nr: le.Uint16(b[4:]), TID: le.Uint32(b[8:]), TS: le.Uint64(b[16:]), Cgid: le.Uint64(b[24:])}, nil
}
