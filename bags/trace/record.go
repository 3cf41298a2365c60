package trace

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// Recording format, version 1 (little endian; see docs/bosc.md):
//
//	magic     8   "ESCTRACE"
//	version   u16
//	flags     u16  bit0: events carry timestamps, bit1: events carry tids
//	hdrLen    u32  length of the header block (<= 64 KiB)
//	header    arch u8, startNS i64, then 4 strings (u16 length + bytes):
//	          container id, name, workload, host
//	hdrCRC    u32  CRC-32C of magic..header
//	frames, each:
//	  tag     u8   'E' events, 'Z' end of recording
//	  count   u32  events in the frame (<= 65536); for 'Z' 0
//	  len     u32  payload bytes
//	  payload 'E': count x u16 syscall numbers, then if timestamps count x
//	          zigzag-varint ns deltas (from the previous event, first from
//	          startNS), then if tids count x u32. 'Z': u64 total events.
//	  crc     u32  CRC-32C of tag..payload
//
// Frames make a torn or corrupted file recoverable up to its last good frame:
// the reader returns every event of every verified frame, then ErrChecksum
// or ErrTruncated (no end frame). The end frame's total catches dropped frames.
const (
	recMagic       = "ESCTRACE"
	recVersion     = 1
	recFlagTS      = 1 << 0
	recFlagTID     = 1 << 1
	maxFrameEvents = 1 << 16
	maxHeader      = 64 << 10
	maxString      = 4096
	tagEvents      = 'E'
	tagEnd         = 'Z'
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// WriterOption configures a recording Writer.
type WriterOption func(*Writer)

// WithTimestamps stores each event's TS.
func WithTimestamps(on bool) WriterOption { return func(w *Writer) { w.ts = on } }

// WithTIDs stores each event's TID.
func WithTIDs(on bool) WriterOption { return func(w *Writer) { w.tid = on } }

// WithFrameEvents sets events per frame (1..65536, default 4096): smaller
// frames lose less on a crash, larger ones cost less overhead.
func WithFrameEvents(n int) WriterOption {
	return func(w *Writer) { w.frame = min(max(n, 1), maxFrameEvents) }
}

// Writer writes a recording. Write buffers events and emits a frame every
// WithFrameEvents events without allocating; Close writes the end frame (it
// does not close the underlying io.Writer). Not safe for concurrent use.
type Writer struct {
	w       io.Writer
	ts, tid bool
	frame   int
	nrs     []uint16
	tss     []int64
	tids    []uint32
	lastTS  int64
	total   uint64
	buf     []byte
	closed  bool
	err     error
}

// NewWriter writes the file header for meta and returns the Writer.
func NewWriter(w io.Writer, meta Meta, opts ...WriterOption) (*Writer, error) {
	rw := &Writer{w: w, frame: 4096, lastTS: meta.StartNS}
	for _, o := range opts {
		o(rw)
	}
	rw.nrs = make([]uint16, 0, rw.frame)
	rw.tss = make([]int64, 0, rw.frame)
	rw.tids = make([]uint32, 0, rw.frame)
	rw.buf = make([]byte, 0, 13+rw.frame*(2+binary.MaxVarintLen64+4)+4)
	strs := []string{meta.ContainerID, meta.Name, meta.Workload, meta.Host}
	for _, s := range strs {
		if len(s) > maxString {
			return nil, fmt.Errorf("new recording: metadata string of %d bytes > %d: %w", len(s), maxString, ErrFormat)
		}
	}
	le := binary.LittleEndian
	h := []byte(recMagic)
	h = le.AppendUint16(h, recVersion)
	var flags uint16
	if rw.ts {
		flags |= recFlagTS
	}
	if rw.tid {
		flags |= recFlagTID
	}
	h = le.AppendUint16(h, flags)
	var hdr []byte
	hdr = append(hdr, byte(meta.Arch))
	hdr = le.AppendUint64(hdr, uint64(meta.StartNS))
	for _, s := range strs {
		hdr = le.AppendUint16(hdr, uint16(len(s)))
		hdr = append(hdr, s...)
	}
	h = le.AppendUint32(h, uint32(len(hdr)))
	h = append(h, hdr...)
	h = le.AppendUint32(h, crc32.Checksum(h, castagnoli))
	if _, err := w.Write(h); err != nil {
		return nil, fmt.Errorf("new recording: write header: %w", err)
	}
	return rw, nil
}

// Write appends one event.
func (w *Writer) Write(ev Event) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return fmt.Errorf("write recording: %w", io.ErrClosedPipe)
	}
	w.nrs = append(w.nrs, ev.Nr)
	if w.ts {
		w.tss = append(w.tss, ev.TS)
	}
	if w.tid {
		w.tids = append(w.tids, ev.TID)
	}
	if len(w.nrs) == w.frame {
		return w.Flush()
	}
	return nil
}

// Flush writes the buffered events as one frame (e.g. on a timer, so a crash
// loses at most one interval).
func (w *Writer) Flush() error {
	if w.err != nil || len(w.nrs) == 0 {
		return w.err
	}
	le := binary.LittleEndian
	b := append(w.buf[:0], tagEvents)
	b = le.AppendUint32(b, uint32(len(w.nrs)))
	b = le.AppendUint32(b, 0) // payload length, patched below
	for _, nr := range w.nrs {
		b = le.AppendUint16(b, nr)
	}
	for _, ts := range w.tss {
		d := ts - w.lastTS
		b = binary.AppendUvarint(b, uint64(d<<1)^uint64(d>>63))
		w.lastTS = ts
	}
	for _, t := range w.tids {
		b = le.AppendUint32(b, t)
	}
	le.PutUint32(b[5:], uint32(len(b)-9))
	b = le.AppendUint32(b, crc32.Checksum(b, castagnoli))
	w.buf = b
	if _, err := w.w.Write(b); err != nil {
		w.err = fmt.Errorf("write recording frame: %w", err)
		return w.err
	}
	w.total += uint64(len(w.nrs))
	w.nrs, w.tss, w.tids = w.nrs[:0], w.tss[:0], w.tids[:0]
	return nil
}

// Close flushes and writes the end frame with the total event count.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	w.closed = true
	le := binary.LittleEndian
	b := []byte{tagEnd}
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, 8)
	b = le.AppendUint64(b, w.total)
	b = le.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if _, err := w.w.Write(b); err != nil {
		w.err = fmt.Errorf("write recording end: %w", err)
	}
	return w.err
}
