package sensor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	escbpf "github.com/escape-mtd/escape/bpf"
)

// Record kinds (enum rec_kind in bpf/escape.h).
const (
	recEpoch  = 1
	recNewBag = 2
	recCall   = 3
	recRemark = 4
)

// epochFlushed marks an epoch closed by the idle timer (EPOCH_FLUSHED).
const epochFlushed = 1

// RawEpoch is one epoch as the kernel ships it: the bag hash of every window
// closed in the epoch, in order.
type RawEpoch struct {
	Slot, Gen, Seq uint32
	Calls          uint32 // calls in the epoch
	Flushed        bool   // closed by the idle timer before E calls
	Final          bool   // drained at Unwatch (the container left mid-epoch)
	Drops          uint32 // cumulative ring-buffer failures of the slot
	Total          uint64 // cumulative calls of the slot
	Hashes         []uint64
}

// NewBag is the exact window of a bag hash the kernel had not shipped.
type NewBag struct {
	Slot, Gen uint32
	Hash      uint64
	Window    []uint16
}

// RemarkRequest is the kernel asking for a watched thread it could not mark
// (REC_REMARK): its calls are unseen until Probe.Remark marks it.
type RemarkRequest struct {
	Slot uint32
	Tid  int32 // in the initial pid namespace
}

var (
	remarkSize = int(unsafe.Sizeof(escbpf.SensorRemarkRec{}))
	hdrSize    = int(unsafe.Sizeof(escbpf.SensorEpochHdr{}))
	newbagSize = int(unsafe.Sizeof(escbpf.SensorNewbag{}))
)

// ErrTimeout is returned by ReadRecord when nothing arrived before the deadline.
var ErrTimeout = os.ErrDeadlineExceeded

// ReadRecord returns the next record, a *RawEpoch, a *NewBag or a
// *RemarkRequest, waiting
// until the deadline (zero: forever).
func (p *Probe) ReadRecord(deadline time.Time) (any, error) {
	p.rd.SetDeadline(deadline)
	rec, err := p.rd.Read()
	if err != nil {
		return nil, fmt.Errorf("read ring buffer: %w", err)
	}
	return decodeRecord(rec.RawSample)
}

// decodeRecord parses one ring-buffer sample; malformed samples are errors,
// never panics.
func decodeRecord(b []byte) (any, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("record of %d bytes: %w", len(b), errShort)
	}
	le := binary.LittleEndian
	switch le.Uint32(b) {
	case recEpoch:
		if len(b) < hdrSize {
			return nil, fmt.Errorf("epoch record of %d bytes: %w", len(b), errShort)
		}
		n := int(le.Uint32(b[20:]))
		if n > MaxEpoch || len(b) < hdrSize+8*n {
			return nil, fmt.Errorf("epoch record of %d bytes claims %d windows: %w", len(b), n, errShort)
		}
		e := &RawEpoch{
			Slot: le.Uint32(b[4:]), Gen: le.Uint32(b[8:]), Seq: le.Uint32(b[12:]),
			Calls: le.Uint32(b[16:]), Flushed: le.Uint32(b[24:])&epochFlushed != 0,
			Drops: le.Uint32(b[28:]), Total: le.Uint64(b[32:]), Hashes: make([]uint64, n),
		}
		for i := range n {
			e.Hashes[i] = le.Uint64(b[hdrSize+8*i:])
		}
		return e, nil
	case recNewBag:
		if len(b) < newbagSize {
			return nil, fmt.Errorf("new-bag record of %d bytes: %w", len(b), errShort)
		}
		w := int(le.Uint32(b[12:]))
		if w < 1 || w > 16 {
			return nil, fmt.Errorf("new-bag record with window %d: %w", w, errShort)
		}
		nb := &NewBag{Slot: le.Uint32(b[4:]), Gen: le.Uint32(b[8:]), Hash: le.Uint64(b[16:]),
			Window: make([]uint16, w)}
		for i := range w {
			nb.Window[i] = le.Uint16(b[24+2*i:])
		}
		return nb, nil
	case recRemark:
		if len(b) < remarkSize {
			return nil, fmt.Errorf("remark record of %d bytes: %w", len(b), errShort)
		}
		return &RemarkRequest{Slot: le.Uint32(b[4:]), Tid: int32(le.Uint32(b[8:]))}, nil
	}
	return nil, fmt.Errorf("record kind %d: %w", le.Uint32(b), errShort)
}

var errShort = errors.New("malformed sensor record")
