package trace

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/escape-mtd/escape/bags/syscalls"
)

// RecordReader replays a recording written by Writer.
type RecordReader struct {
	br      *bufio.Reader
	meta    Meta
	ts, tid bool
	frame   []byte
	nrs     []byte
	tss     []byte
	tids    []byte
	i, n    int
	lastTS  int64
	total   uint64
	frames  uint64
	done    bool
}

// NewRecordReader reads and verifies the header.
func NewRecordReader(r io.Reader) (*RecordReader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	fixed := make([]byte, 16)
	if _, err := io.ReadFull(br, fixed); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read recording: empty file: %w", ErrEmpty)
		}
		return nil, fmt.Errorf("read recording header: %w (%w)", ErrTruncated, err)
	}
	if string(fixed[:8]) != recMagic {
		return nil, fmt.Errorf("read recording: bad magic: %w", ErrFormat)
	}
	le := binary.LittleEndian
	if v := le.Uint16(fixed[8:]); v != recVersion {
		return nil, fmt.Errorf("read recording: version %d, this build reads %d: %w", v, recVersion, ErrFormat)
	}
	flags := le.Uint16(fixed[10:])
	hl := le.Uint32(fixed[12:])
	if hl > maxHeader || hl < 9+8 {
		return nil, fmt.Errorf("read recording: header length %d: %w", hl, ErrFormat)
	}
	hdr := make([]byte, hl+4)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return nil, fmt.Errorf("read recording header: %w", ErrTruncated)
	}
	all := append(fixed, hdr[:hl]...)
	if crc32.Checksum(all, castagnoli) != le.Uint32(hdr[hl:]) {
		return nil, fmt.Errorf("read recording header: %w", ErrChecksum)
	}
	m := Meta{Arch: syscalls.Arch(hdr[0]), StartNS: int64(le.Uint64(hdr[1:]))}
	p := hdr[9:hl]
	var strs [4]string
	for i := range strs {
		if len(p) < 2 || len(p) < 2+int(le.Uint16(p)) {
			return nil, fmt.Errorf("read recording header: string %d overruns: %w", i, ErrFormat)
		}
		n := int(le.Uint16(p))
		strs[i], p = string(p[2:2+n]), p[2+n:]
	}
	m.ContainerID, m.Name, m.Workload, m.Host = strs[0], strs[1], strs[2], strs[3]
	if m.Arch.String() != "x86_64" && m.Arch.String() != "i386" {
		return nil, fmt.Errorf("read recording header: arch %d: %w", hdr[0], ErrFormat)
	}
	return &RecordReader{br: br, meta: m, ts: flags&recFlagTS != 0, tid: flags&recFlagTID != 0, lastTS: m.StartNS}, nil
}

// Meta reports the recorded container's identity and arch.
func (r *RecordReader) Meta() Meta { return r.meta }

// Next returns the next event; after the last verified event of a damaged
// file it returns ErrTruncated or ErrChecksum.
func (r *RecordReader) Next() (Event, error) {
	for r.i == r.n {
		if r.done {
			return Event{}, io.EOF
		}
		if err := r.readFrame(); err != nil {
			return Event{}, err
		}
	}
	le := binary.LittleEndian
	ev := Event{Nr: le.Uint16(r.nrs[2*r.i:])}
	if r.ts {
		u, k := binary.Uvarint(r.tss)
		r.tss = r.tss[k:]
		r.lastTS += int64(u>>1) ^ -int64(u&1)
		ev.TS = r.lastTS
	}
	if r.tid {
		ev.TID = le.Uint32(r.tids[4*r.i:])
	}
	r.i++
	return ev, nil
}

func (r *RecordReader) readFrame() error {
	le := binary.LittleEndian
	var h [9]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return fmt.Errorf("read recording: after %d frames, %d events, no end frame: %w", r.frames, r.total, ErrTruncated)
	}
	count, plen := le.Uint32(h[1:]), le.Uint32(h[5:])
	var want uint32
	switch h[0] {
	case tagEnd:
		if count != 0 || plen != 8 {
			return fmt.Errorf("read recording: frame %d: bad end frame: %w", r.frames, ErrFormat)
		}
		want = 8
	case tagEvents:
		per := uint32(2)
		if r.tid {
			per += 4
		}
		minLen, maxLen := count*per, count*per
		if r.ts {
			minLen += count
			maxLen += count * binary.MaxVarintLen64
		}
		if count == 0 || count > maxFrameEvents || plen < minLen || plen > maxLen {
			return fmt.Errorf("read recording: frame %d: %d events in %d bytes: %w", r.frames, count, plen, ErrFormat)
		}
		want = plen
	default:
		return fmt.Errorf("read recording: frame %d: tag %#x: %w", r.frames, h[0], ErrFormat)
	}
	if cap(r.frame) < int(want)+13 {
		r.frame = make([]byte, int(want)+13)
	}
	f := r.frame[:int(want)+13]
	copy(f, h[:])
	if _, err := io.ReadFull(r.br, f[9:]); err != nil {
		return fmt.Errorf("read recording: frame %d cut short: %w", r.frames, ErrTruncated)
	}
	if crc32.Checksum(f[:9+want], castagnoli) != le.Uint32(f[9+want:]) {
		return fmt.Errorf("read recording: frame %d: %w", r.frames, ErrChecksum)
	}
	r.frames++
	p := f[9 : 9+want]
	if h[0] == tagEnd {
		if got := le.Uint64(p); got != r.total {
			return fmt.Errorf("read recording: end frame says %d events, read %d: %w", got, r.total, ErrTruncated)
		}
		r.done = true
		return nil
	}
	r.nrs, p = p[:2*count], p[2*count:]
	if r.ts {
		// Validate the varints now so Next cannot run past the frame.
		q := p
		for i := uint32(0); i < count; i++ {
			_, k := binary.Uvarint(q)
			if k <= 0 {
				return fmt.Errorf("read recording: frame %d: bad timestamp: %w", r.frames-1, ErrFormat)
			}
			q = q[k:]
		}
		r.tss, p = p[:len(p)-len(q)], q
	}
	if r.tid {
		if len(p) != int(4*count) {
			return fmt.Errorf("read recording: frame %d: tid block %d bytes: %w", r.frames-1, len(p), ErrFormat)
		}
		r.tids, p = p, nil
	}
	if len(p) != 0 {
		return fmt.Errorf("read recording: frame %d: %d trailing bytes: %w", r.frames-1, len(p), ErrFormat)
	}
	r.i, r.n = 0, int(count)
	r.total += uint64(count)
	return nil
}
