package sensor

import (
	"encoding/binary"
	"testing"
)

// The ring buffer is the kernel's, but a reader must survive any bytes: a
// malformed record is an errShort error, never a panic or an oversized slice.
func FuzzDecodeRecord(f *testing.F) {
	le := binary.LittleEndian
	epoch := make([]byte, hdrSize+3*8)
	le.PutUint32(epoch, recEpoch)
	le.PutUint32(epoch[20:], 3)
	newbag := make([]byte, newbagSize)
	le.PutUint32(newbag, recNewBag)
	le.PutUint32(newbag[12:], 10)
	remark := make([]byte, remarkSize)
	le.PutUint32(remark, recRemark)
	le.PutUint32(remark[8:], 4242)
	for _, seed := range [][]byte{epoch, newbag, remark, epoch[:hdrSize+8], newbag[:20], remark[:8], {}, {9, 0, 0, 0}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := decodeRecord(b)
		if err != nil {
			if rec != nil {
				t.Fatalf("error %v with a record %+v", err, rec)
			}
			return
		}
		switch r := rec.(type) {
		case *RawEpoch:
			if len(r.Hashes) > MaxEpoch || hdrSize+8*len(r.Hashes) > len(b) {
				t.Fatalf("%d hashes from %d bytes", len(r.Hashes), len(b))
			}
		case *NewBag:
			if len(r.Window) < 1 || len(r.Window) > 16 {
				t.Fatalf("window of %d", len(r.Window))
			}
		case *RemarkRequest:
			if len(b) < remarkSize {
				t.Fatalf("remark from %d bytes", len(b))
			}
		default:
			t.Fatalf("record %T", rec)
		}
	})
}
