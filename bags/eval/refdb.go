package eval

import (
	"math"

	"github.com/escape-mtd/escape/bags"
)

// Span is the length, in windows, of the sub-trace over which the
// length-aware aggregate BagRarityMax takes its maximum (chosen on the dev
// attacks among 10, 30 and 100; see docs/bosc.md).
const Span = 100

// RefDB is the pooled database of a set of normal reference traces: bag →
// number of windows (the BoSC database), the (W−1)-call sub-multisets of its
// bags (for soft matching), and the n-grams of orders 1..NGram (the STIDE
// and n-gram channels). All counts are kept, so a reference trace can be
// scored leave-one-out: Score with self=true subtracts the trace's own
// windows, sub-multisets and n-grams first, which is exactly the database
// built without it. That lets every normal trace of the selection half A be
// both database content and threshold-selection data without scoring itself
// as seen.
//
// The normalising constants of the rarity scores (N windows, |B| bags, and
// the n-gram totals) are those of the full database even when scoring
// leave-one-out: with per-trace constants an unseen bag of a reference trace
// would score a hair lower than an unseen bag of any other trace, a tie
// broken in favour of the threshold data (measured: it inflated DR@5% from
// 7% to 58% on a max-aggregated score).
type RefDB struct {
	W      int
	bagN   map[bags.Bag]uint32
	subN   map[bags.Bag]uint32 // (W−1)-sub-multiset → distinct database bags containing it
	gramN  map[gram]uint32     // n-grams of orders 1..NGram
	total  uint64              // windows
	calls  uint64
	grams  [NGram + 1]uint64 // n-grams of each order
	kinds  [NGram + 1]int    // distinct n-grams of each order
	vocab  int               // distinct syscalls
	traces int
}

// gram is an n-gram of up to NGram calls: [0] is n, then the calls.
type gram [NGram + 1]uint16

func gramOf(c []uint16) gram {
	var g gram
	g[0] = uint16(len(c))
	copy(g[1:], c)
	return g
}

// NewRefDB counts the windows of w calls and the n-grams of refs.
func NewRefDB(refs []Trace, w int) *RefDB {
	db := &RefDB{W: w, bagN: map[bags.Bag]uint32{}, subN: map[bags.Bag]uint32{}, gramN: map[gram]uint32{}, traces: len(refs)}
	vocab := map[uint16]struct{}{}
	for _, t := range refs {
		for b := range bags.Slide(t.Calls, w) {
			if db.bagN[b] == 0 {
				for s := range subBags(b, w) {
					db.subN[s]++
				}
			}
			db.bagN[b]++
			db.total++
		}
		eachGram(t.Calls, func(g gram) {
			if db.gramN[g] == 0 {
				db.kinds[g[0]]++
			}
			db.gramN[g]++
			db.grams[g[0]]++
		})
		for _, c := range t.Calls {
			vocab[c] = struct{}{}
		}
		db.calls += uint64(len(t.Calls))
	}
	db.vocab = len(vocab)
	return db
}

// eachGram calls fn for every n-gram of orders 1..NGram of calls.
func eachGram(calls []uint16, fn func(gram)) {
	for i := range calls {
		for n := 1; n <= NGram && n <= i+1; n++ {
			fn(gramOf(calls[i+1-n : i+1]))
		}
	}
}

// Bags is the number of distinct bags in the database.
func (db *RefDB) Bags() int { return len(db.bagN) }

// view is the database as seen by one trace: the full counts, minus the
// trace's own when it is scored leave-one-out.
type view struct {
	db    *RefDB
	bag   map[bags.Bag]uint32 // own windows per bag (nil unless self)
	sub   map[bags.Bag]uint32 // own bags found nowhere else, per sub-multiset
	gram  map[gram]uint32     // own n-grams
	total uint64
}

func (db *RefDB) view(calls []uint16, self bool) view {
	v := view{db: db, total: db.total}
	if !self {
		return v
	}
	v.bag, v.sub, v.gram = map[bags.Bag]uint32{}, map[bags.Bag]uint32{}, map[gram]uint32{}
	for b := range bags.Slide(calls, db.W) {
		v.bag[b]++
		v.total--
	}
	for b, n := range v.bag {
		if db.bagN[b] == n { // the trace is this bag's only source: its sub-multisets lose it
			for s := range subBags(b, db.W) {
				v.sub[s]++
			}
		}
	}
	eachGram(calls, func(g gram) { v.gram[g]++ })
	return v
}

// The maps read 0 for absent keys, and nil maps too (self=false).
func (v view) freq(b bags.Bag) uint32 { return v.db.bagN[b] - v.bag[b] }
func (v view) count(g gram) uint32    { return v.db.gramN[g] - v.gram[g] }
func (v view) near(s bags.Bag) bool   { return v.db.subN[s]-v.sub[s] > 0 }

// Score scores one trace; self=true means the trace is one of the reference
// traces and is left out of the database while it is scored. It fills the
// pooled-database scores: Mismatches, Windows, Frac, Surprisal, BagRarity,
// BagRarityMax, Soft, Stide, GramRarity and LM.
func (db *RefDB) Score(calls []uint16, self bool) Scores {
	var s Scores
	v := db.view(calls, self)
	logN := math.Log(float64(v.total) + 1)
	rarity := make([]float64, 0, max(0, len(calls)-db.W+1))
	var surprisal, soft float64
	for b := range bags.Slide(calls, db.W) {
		f := v.freq(b)
		if f == 0 {
			s.Mismatches++
			soft += v.softLevel(b)
		}
		if logN > 0 {
			surprisal += (logN - math.Log(float64(f)+1)) / logN
		}
		rarity = append(rarity, db.bagRarity(f))
		s.Windows++
	}
	if s.Windows > 0 {
		s.Frac = float64(s.Mismatches) / float64(s.Windows)
		s.Surprisal = surprisal / float64(s.Windows)
		s.Soft = soft / 2 / float64(s.Windows) // levels 1, 2 → ½, 1
		s.BagRarity = mean(rarity)
		s.BagRarityMax = maxSpanMean(rarity, Span)
	}
	grams, unseen := 0, 0
	var gramRarity float64
	for i := 0; i+NGram <= len(calls); i++ {
		c := v.count(gramOf(calls[i : i+NGram]))
		grams++
		if c == 0 {
			unseen++
		}
		gramRarity += -math.Log((float64(c) + 1) / (float64(db.grams[NGram]) + float64(db.kinds[NGram]) + 1))
	}
	if grams > 0 {
		s.Stide = float64(unseen) / float64(grams)
		s.GramRarity = gramRarity / float64(grams)
	}
	s.LM = v.lmScore(calls)
	return s
}

// bagRarity is the add-one-smoothed surprisal of a bag seen f times:
// −ln((f+1)/(N+|B|+1)), the vocabulary being the |B| known bags plus one
// class for all unseen ones. Unlike the binary mismatch it separates a bag
// seen once from one seen a million times; it is monotone in f, so an unseen
// bag is always the rarest.
func (db *RefDB) bagRarity(f uint32) float64 {
	return -math.Log((float64(f) + 1) / (float64(db.total) + float64(len(db.bagN)) + 1))
}

func mean(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	var s float64
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}

// maxSpanMean is the largest mean of span consecutive values (the mean of
// all values when there are fewer): a length-aware aggregate, so that a
// short anomalous burst inside a long normal trace is not averaged away.
func maxSpanMean(x []float64, span int) float64 {
	if len(x) <= span {
		return mean(x)
	}
	var s float64
	for _, v := range x[:span] {
		s += v
	}
	best := s
	for i := span; i < len(x); i++ {
		s += x[i] - x[i-span]
		best = max(best, s)
	}
	return best / float64(span)
}
