package bags

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
)

// File format (version 2; version 1 still loads), little endian,
// documented in docs/bosc.md:
//
//	magic      8  "ESCBOSC\n"
//	version    u16
//	flags      u16  bit0 training stopped, bit1 online learning,
//	           bit2 learning phase complete, bit3 sequence model (v2)
//	window     u16
//	epoch      u32
//	threshold  u64
//	autoStop   u32
//	maxBags    u32
//	stats      5 x u64 (trained windows, trained epochs, learned online,
//	           overflow bags, overflow windows)
//	workload   u16 length + bytes
//	arch       u16 length + bytes
//	rule       u16 length + bytes (v2: the scorer, "bosc" or "lm")
//	limit      f64 bits (v2: the scorer's threshold in its unit)
//	nbags      u64
//	bags       nbags x (window x u16 syscall numbers ascending, u32 frequency),
//	           sorted by bag, so equal profiles give equal files
//	if bit3:   nbi u64, nbi x (u32 a, u32 b, u32 count), then
//	           ntri u64, ntri x (u32 a, u32 b, u32 c, u32 count), then
//	           overflow u64: the sequence model, a b c indices into the
//	           bags above, each list sorted by key
//	sha256     32 bytes over everything before it
//
// The loader checks the size implied by nbags against the file before it
// allocates anything and verifies the checksum before it parses the body, so a
// corrupted or hostile file costs at most its own size in memory.
const (
	fileMagic     = "ESCBOSC\n"
	fileVersion   = 2
	fileVersionV1 = 1
	maxNameLen    = 1024
	fixedHdrLen   = 8 + 2 + 2 + 2 + 4 + 8 + 4 + 4 + 5*8
	maxProfileLen = 1 << 31
	flagStopped   = 1 << 0
	flagOnline    = 1 << 1
	flagComplete  = 1 << 2
	flagSequence  = 1 << 3
	biEntry       = 12
	triEntry      = 16
)

var (
	// ErrCorrupt reports a profile file that is truncated, altered or not a
	// profile at all.
	ErrCorrupt = errors.New("corrupt profile")
	// ErrVersion reports a profile written by an unsupported format version.
	ErrVersion = errors.New("unsupported profile version")
)

// WriteTo exports the profile in the file format (io.WriterTo). Use it to
// carry a profile to another host; ReadProfile imports it.
func (p *Profile) WriteTo(w io.Writer) (int64, error) {
	p.mu.Lock()
	buf := p.encodeLocked()
	p.mu.Unlock()
	n, err := w.Write(buf)
	if err != nil {
		return int64(n), fmt.Errorf("export profile: %w", err)
	}
	return int64(n), nil
}

func (p *Profile) encodeLocked() []byte {
	c := &p.cfg
	entry := 2*c.window + 4
	buf := make([]byte, 0, fixedHdrLen+4+len(c.workload)+len(c.arch)+8+p.db.len()*entry+sha256.Size)
	le := binary.LittleEndian
	buf = append(buf, fileMagic...)
	buf = le.AppendUint16(buf, fileVersion)
	var flags uint16
	if p.stats.Stopped {
		flags |= flagStopped
	}
	if c.online {
		flags |= flagOnline
	}
	if p.complete {
		flags |= flagComplete
	}
	if p.seq != nil {
		flags |= flagSequence
	}
	buf = le.AppendUint16(buf, flags)
	buf = le.AppendUint16(buf, uint16(c.window))
	buf = le.AppendUint32(buf, uint32(c.epoch))
	buf = le.AppendUint64(buf, c.threshold)
	buf = le.AppendUint32(buf, uint32(c.autoStop))
	buf = le.AppendUint32(buf, uint32(c.maxBags))
	for _, v := range []uint64{p.stats.TrainedWindows, p.stats.TrainedEpochs, p.stats.LearnedOnline,
		p.stats.OverflowBags, p.stats.OverflowWindows} {
		buf = le.AppendUint64(buf, v)
	}
	for _, s := range []string{c.workload, c.arch, p.rule} {
		buf = le.AppendUint16(buf, uint16(len(s)))
		buf = append(buf, s...)
	}
	buf = le.AppendUint64(buf, math.Float64bits(p.limit))
	type kv struct {
		b   Bag
		f   uint32
		idx uint32
	}
	keys := make([]kv, 0, p.db.len())
	p.db.each(func(s *slot) bool { keys = append(keys, kv{s.bag, s.val, s.idx}); return true })
	slices.SortFunc(keys, func(a, b kv) int { return compareBags(&a.b, &b.b) })
	buf = le.AppendUint64(buf, uint64(len(keys)))
	for _, k := range keys {
		for i := 0; i < c.window; i++ {
			buf = le.AppendUint16(buf, k.b[i])
		}
		buf = le.AppendUint32(buf, k.f)
	}
	if p.seq != nil {
		pos := make([]uint32, len(keys)) // table id -> position in the file
		for i, k := range keys {
			pos[k.idx] = uint32(i)
		}
		buf = p.seq.appendTo(buf, pos)
	}
	sum := sha256.Sum256(buf)
	return append(buf, sum[:]...)
}

// ReadProfile imports a profile written by WriteTo or SaveFile. Options may
// change run-time settings (threshold, online learning, auto-stop, cap,
// logger); a window or arch option that contradicts the file is an error,
// since the stored bags only make sense in their own window and arch.
func ReadProfile(r io.Reader, opts ...Option) (*Profile, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxProfileLen+1))
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	if len(data) > maxProfileLen {
		return nil, fmt.Errorf("read profile: larger than %d bytes: %w", maxProfileLen, ErrCorrupt)
	}
	p, err := decodeProfile(data)
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	file := p.cfg
	for _, o := range opts {
		o(&p.cfg)
	}
	if p.cfg.window != file.window || p.cfg.arch != file.arch {
		return nil, fmt.Errorf("read profile: stored window %d arch %q, options ask window %d arch %q: %w",
			file.window, file.arch, p.cfg.window, p.cfg.arch, ErrConfig)
	}
	if err := p.cfg.validate(); err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	return p, nil
}

func decodeProfile(data []byte) (*Profile, error) {
	if len(data) < len(fileMagic) || !bytes.Equal(data[:len(fileMagic)], []byte(fileMagic)) {
		return nil, fmt.Errorf("bad magic (not an ESCAPE profile): %w", ErrCorrupt)
	}
	if len(data) < fixedHdrLen+4+8+sha256.Size {
		return nil, fmt.Errorf("truncated: %d bytes: %w", len(data), ErrCorrupt)
	}
	le := binary.LittleEndian
	version := le.Uint16(data[8:])
	if version != fileVersion && version != fileVersionV1 {
		return nil, fmt.Errorf("version %d, this build reads %d and %d: %w", version, fileVersionV1, fileVersion, ErrVersion)
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, fmt.Errorf("checksum mismatch (truncated or altered): %w", ErrCorrupt)
	}
	d := decoder{b: body[10:]}
	cfg := defaultConfig()
	flags := d.u16()
	cfg.window = int(d.u16())
	cfg.epoch = int(d.u32())
	cfg.threshold = d.u64()
	cfg.autoStop = int(d.u32())
	cfg.maxBags = int(d.u32())
	var st Stats
	st.TrainedWindows, st.TrainedEpochs, st.LearnedOnline = d.u64(), d.u64(), d.u64()
	st.OverflowBags, st.OverflowWindows = d.u64(), d.u64()
	st.Stopped = flags&flagStopped != 0
	cfg.online = flags&flagOnline != 0
	cfg.workload = d.str()
	cfg.arch = d.str()
	rule, limit := RuleBoSC, float64(cfg.threshold)
	if version >= 2 {
		rule = d.str()
		limit = math.Float64frombits(d.u64())
		cfg.sequence = flags&flagSequence != 0
		if flags&^(flagStopped|flagOnline|flagComplete|flagSequence) != 0 {
			return nil, fmt.Errorf("flags %#x: %w", flags, ErrCorrupt)
		}
	} else if flags&^(flagStopped|flagOnline) != 0 {
		return nil, fmt.Errorf("version 1 flags %#x: %w", flags, ErrCorrupt)
	}
	n := d.u64()
	if d.err != nil {
		return nil, d.err
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("header: %v: %w", err, ErrCorrupt)
	}
	if !slices.Contains(Rules(), rule) {
		return nil, fmt.Errorf("header: scorer %q: %w", rule, ErrCorrupt)
	}
	if math.IsNaN(limit) || math.IsInf(limit, 0) || limit < 0 {
		return nil, fmt.Errorf("header: threshold %v: %w", limit, ErrCorrupt)
	}
	entry := uint64(2*cfg.window + 4)
	if n > uint64(len(d.b))/entry || (!cfg.sequence && n*entry != uint64(len(d.b))) {
		return nil, fmt.Errorf("%d bags do not fit %d body bytes: %w", n, len(d.b), ErrCorrupt)
	}
	db := newTable(int(n))
	var prev Bag
	for i := uint64(0); i < n; i++ {
		var b Bag
		for j := range b {
			b[j] = pad
		}
		for j := 0; j < cfg.window; j++ {
			b[j] = d.u16()
		}
		f := d.u32()
		if !b.valid() || b.Len() != cfg.window || (i > 0 && compareBags(&prev, &b) >= 0) || f == 0 {
			return nil, fmt.Errorf("bag %d is not canonical, out of order or has zero frequency: %w", i, ErrCorrupt)
		}
		s, _ := db.upsert(hashBag(&b), &b)
		s.val = f
		prev = b
	}
	p := &Profile{cfg: cfg, db: db, stats: st, rule: rule, limit: limit, complete: flags&flagComplete != 0,
		legacy: version == fileVersionV1}
	if cfg.sequence {
		seq, err := decodeSeq(&d, uint32(n))
		if err != nil {
			return nil, err
		}
		p.seq = seq
	}
	if rule == RuleLM && p.seq == nil {
		return nil, fmt.Errorf("scorer %s without a sequence model: %w", rule, ErrCorrupt)
	}
	return p, nil
}

// decoder reads little-endian fields and remembers the first short read.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil || len(d.b) < n {
		if d.err == nil {
			d.err = fmt.Errorf("header truncated: %w", ErrCorrupt)
		}
		return make([]byte, n)
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) u16() uint16 { return binary.LittleEndian.Uint16(d.take(2)) }
func (d *decoder) u32() uint32 { return binary.LittleEndian.Uint32(d.take(4)) }
func (d *decoder) u64() uint64 { return binary.LittleEndian.Uint64(d.take(8)) }
func (d *decoder) str() string {
	n := int(d.u16())
	if n > maxNameLen {
		if d.err == nil {
			d.err = fmt.Errorf("name of %d bytes: %w", n, ErrCorrupt)
		}
		return ""
	}
	return string(d.take(n))
}
