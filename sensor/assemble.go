package sensor

import (
	"slices"

	"github.com/escape-mtd/escape/bags"
)

// Epoch is one container epoch resolved into exact bags.
type Epoch struct {
	Slot, Gen, Seq uint32
	Calls          uint32
	Flushed, Final bool
	NewDrops       uint32 // ring-buffer failures since the previous epoch of the slot
	Lost           uint32 // epochs of the slot that never arrived before this one
	Unresolved     int    // windows whose hash has no known bag (its new-bag record was lost)
	Collisions     int    // windows whose hash maps to two different bags
	Bags           bags.Epoch
}

// Assembler turns hash epochs into exact bag epochs. It learns each hash's
// bag from the kernel's new-bag records, checks the hash against the keys
// (a mismatch is a decoding bug or tampering) and detects collisions: two
// different bags with one hash. Not safe for concurrent use.
type Assembler struct {
	hashOf  func([]uint16) uint64
	dict    map[uint64]bags.Bag
	bad     map[uint64]bool // hashes seen with two different bags
	maxDict int
	last    map[[2]uint32]slotTrack
	scratch map[uint64]uint32
	entries []entry // Build's sorting scratch, reused
	// Counters.
	Collisions, BadHashes, DictFull uint64
}

type slotTrack struct {
	nextSeq uint32
	drops   uint32
}

// defaultMaxDict bounds the hash -> bag dictionary (about 60 B per entry).
// Past it, new bags are not learned and their epochs come out degraded, so an
// attacker manufacturing novel bags cannot exhaust the daemon's memory.
const defaultMaxDict = 1 << 22

// NewAssembler returns an assembler for the probe's keys.
func NewAssembler(hashOf func([]uint16) uint64) *Assembler {
	return &Assembler{
		hashOf: hashOf, dict: make(map[uint64]bags.Bag), bad: make(map[uint64]bool),
		maxDict: defaultMaxDict, last: make(map[[2]uint32]slotTrack), scratch: make(map[uint64]uint32),
	}
}

// Learn records a new bag. It reports false if the record is inconsistent
// (hash != sum of keys) or collides with a different bag for the same hash.
func (a *Assembler) Learn(nb *NewBag) bool {
	if a.hashOf(nb.Window) != nb.Hash {
		a.BadHashes++
		return false
	}
	b := bags.BagOf(nb.Window)
	if old, ok := a.dict[nb.Hash]; ok {
		if old != b {
			a.Collisions++
			a.bad[nb.Hash] = true
			return false
		}
		return true
	}
	if len(a.dict) >= a.maxDict {
		a.DictFull++
		return false
	}
	a.dict[nb.Hash] = b
	return true
}

// Known reports whether every hash of e has a bag.
func (a *Assembler) Known(e *RawEpoch) bool {
	for _, h := range e.Hashes {
		if _, ok := a.dict[h]; !ok {
			return false
		}
	}
	return true
}

// Build resolves e. Windows with unknown or colliding hashes are left out
// and mark the epoch degraded, as do drops and lost epochs: an epoch that
// lost data is never passed off as clean.
func (a *Assembler) Build(e *RawEpoch) Epoch {
	key := [2]uint32{e.Slot, e.Gen}
	tr := a.last[key]
	out := Epoch{Slot: e.Slot, Gen: e.Gen, Seq: e.Seq, Calls: e.Calls, Flushed: e.Flushed, Final: e.Final}
	if e.Seq > tr.nextSeq {
		out.Lost = e.Seq - tr.nextSeq
	}
	if e.Drops > tr.drops {
		out.NewDrops = e.Drops - tr.drops
	}
	if e.Final {
		delete(a.last, key)
	} else {
		a.last[key] = slotTrack{nextSeq: e.Seq + 1, drops: max(e.Drops, tr.drops)}
	}
	clear(a.scratch)
	for _, h := range e.Hashes {
		a.scratch[h]++
	}
	es := a.entries[:0]
	for h, n := range a.scratch {
		b, ok := a.dict[h]
		switch {
		case !ok:
			out.Unresolved += int(n)
		case a.bad[h]:
			out.Collisions += int(n)
		default:
			es = append(es, entry{h, bags.BagCount{Bag: b, Count: n}})
		}
	}
	// Canonical order: epochs compare element by element.
	slices.SortFunc(es, func(x, y entry) int { return bags.CompareBags(x.bc.Bag, y.bc.Bag) })
	bc := make([]bags.BagCount, len(es))
	clear(a.scratch)
	for i, x := range es {
		bc[i] = x.bc
		a.scratch[x.h] = uint32(i)
	}
	a.entries = es
	// The kernel ships the window hashes in the order the windows closed:
	// the sequence scorers read it.
	order := make([]uint32, len(e.Hashes))
	for i, h := range e.Hashes {
		j, ok := a.scratch[h]
		if !ok {
			j = bags.NoBag
		}
		order[i] = j
	}
	out.Bags = bags.Epoch{
		Windows:  uint64(len(e.Hashes)),
		Bags:     bc,
		Order:    order,
		Degraded: out.Lost > 0 || out.NewDrops > 0 || out.Unresolved > 0 || out.Collisions > 0,
	}
	return out
}

// entry is one distinct bag of an epoch being built, with its hash.
type entry struct {
	h  uint64
	bc bags.BagCount
}

// Forget drops the sequence tracking of a slot generation.
func (a *Assembler) Forget(slot, gen uint32) { delete(a.last, [2]uint32{slot, gen}) }

// DictSize is the number of distinct bags learned.
func (a *Assembler) DictSize() int { return len(a.dict) }
