package eval

import (
	"math"

	"github.com/escape-mtd/escape/bags"
)

// RefDB is the pooled BoSC database (bag → number of training windows) and
// the 6-gram database (6-gram → occurrences) of a set of normal reference
// traces, with the counts kept so that a reference trace can be scored
// leave-one-out: scoring trace t with self=true subtracts t's own windows and
// 6-grams from the counts first, which is exactly the database built without
// t. That lets every normal trace of the selection half A be both database
// content and threshold-selection data without scoring itself as seen.
//
// The scores are those of Model.Score: share of unseen windows (Frac), mean
// normalised surprisal (Surprisal) and share of unseen 6-grams (Stide).
type RefDB struct {
	W      int
	bagN   map[bags.Bag]uint32
	gramN  map[[NGram]uint16]uint32
	total  uint64 // windows
	traces int
}

// NewRefDB counts the windows of w calls and the 6-grams of refs.
func NewRefDB(refs []Trace, w int) *RefDB {
	db := &RefDB{W: w, bagN: map[bags.Bag]uint32{}, gramN: map[[NGram]uint16]uint32{}, traces: len(refs)}
	for _, t := range refs {
		for b := range bags.Slide(t.Calls, w) {
			db.bagN[b]++
			db.total++
		}
		for i := 0; i+NGram <= len(t.Calls); i++ {
			db.gramN[[NGram]uint16(t.Calls[i:i+NGram])]++
		}
	}
	return db
}

// Bags is the number of distinct bags in the database.
func (db *RefDB) Bags() int { return len(db.bagN) }

// Score scores one trace; self=true means the trace is one of the reference
// traces and is left out of the database while it is scored.
func (db *RefDB) Score(calls []uint16, self bool) Scores {
	var s Scores
	var own map[bags.Bag]uint32
	total := db.total
	if self {
		own = map[bags.Bag]uint32{}
		for b := range bags.Slide(calls, db.W) {
			own[b]++
			total--
		}
	}
	logN := math.Log(float64(total) + 1)
	var surprisal float64
	for b := range bags.Slide(calls, db.W) {
		f := db.bagN[b] - own[b] // own is nil (reads 0) unless self
		if f == 0 {
			s.Mismatches++
		}
		if logN > 0 {
			surprisal += (logN - math.Log(float64(f)+1)) / logN
		}
		s.Windows++
	}
	if s.Windows > 0 {
		s.Frac = float64(s.Mismatches) / float64(s.Windows)
		s.Surprisal = surprisal / float64(s.Windows)
	}
	var ownG map[[NGram]uint16]uint32
	if self {
		ownG = map[[NGram]uint16]uint32{}
		for i := 0; i+NGram <= len(calls); i++ {
			ownG[[NGram]uint16(calls[i:i+NGram])]++
		}
	}
	grams, unseen := 0, 0
	for i := 0; i+NGram <= len(calls); i++ {
		g := [NGram]uint16(calls[i : i+NGram])
		grams++
		if db.gramN[g]-ownG[g] == 0 {
			unseen++
		}
	}
	if grams > 0 {
		s.Stide = float64(unseen) / float64(grams)
	}
	return s
}
