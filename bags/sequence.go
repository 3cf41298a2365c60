package bags

import (
	"fmt"
	"math"
)

// Backoff is the stupid-backoff factor of the sequence model (Brants et al.
// 2007, their value, the one bags/eval's call-level n-gram model uses): each
// step down to a shorter context multiplies the estimate by it.
const Backoff = 0.4

// maxSeqBags bounds the bag ids of a sequence model: a trigram key packs
// three ids of 21 bits into one uint64, exactly (no hashing, no collision).
const maxSeqBags = 1 << 21

// seqModel is the order-3 model of the sequence of window bags: how often
// bag c followed bags a, b (trigrams) and bag b followed bag a (bigrams),
// keyed by the bags' ids in the profile's table. The unigram level is the
// profile's own bag frequencies. Consecutive windows share W−1 calls, so a
// trigram of bags spans W+2 calls, in order at both ends: what the papers'
// bag of one window forgets.
type seqModel struct {
	bi, tri *gramTable
	// overflow counts n-grams dropped because of the cap (the profile's
	// max bags, per level), so a flood cannot grow memory.
	overflow uint64
}

func newSeqModel() *seqModel {
	return &seqModel{bi: newGramTable(), tri: newGramTable()}
}

func biKey(a, b uint32) uint64     { return uint64(a)<<21 | uint64(b) }
func triKey(a, b, c uint32) uint64 { return uint64(a)<<42 | uint64(b)<<21 | uint64(c) }

func (m *seqModel) add(tab *gramTable, k uint64, limit int) {
	if !tab.add(k, limit) {
		m.overflow++
	}
}

// learn counts the n-grams of one epoch's windows; ids maps the epoch's bag
// index to the bag's id in the profile (NoBag if not stored). The context
// starts afresh at each epoch and after a window of unknown bag.
func (m *seqModel) learn(order []uint32, ids []uint32, limit int) {
	a, b := NoBag, NoBag
	for _, o := range order {
		c := NoBag
		if o != NoBag && int(o) < len(ids) {
			c = ids[o]
		}
		if c != NoBag {
			if b != NoBag {
				m.add(m.bi, biKey(b, c), limit)
				if a != NoBag {
					m.add(m.tri, triKey(a, b, c), limit)
				}
			}
		}
		a, b = b, c
	}
}

// surprise is the mean over the epoch's windows of −ln S(bag | two previous
// bags), nats, under stupid backoff:
//
//	S(c | a b) = n(a b c) / n(a b)            if n(a b c) > 0
//	           = Backoff · S(c | b) otherwise
//	S(c | b)   = n(b c) / f(b)                if n(b c) > 0
//	           = Backoff · S(c)   otherwise
//	S(c)       = (f(c) + 1) / (N + V + 1)     (add-one, V stored bags)
//
// where a context the window does not have (the epoch's first windows, or
// after an unknown window) is not a backoff step, as in bags/eval's call
// model. db is the profile's table; ids as in learn. Without an order
// (nil) each bag counts its windows at the unigram level only.
func (m *seqModel) surprise(e *Epoch, ids []uint32, db *table, n uint64) (mean float64, scored uint64) {
	freq := func(id uint32) uint32 { return db.slots[db.used[id]].val }
	v := db.len()
	norm := float64(n) + float64(v) + 1
	uni := func(id uint32) float64 {
		f := 0.0
		if id != NoBag {
			f = float64(freq(id))
		}
		return (f + 1) / norm
	}
	// The mean of −ln p is −ln of the product of the p's over their count:
	// a running product, renormalised by its binary exponent before it can
	// underflow, costs one logarithm per epoch instead of one per window.
	prod, exp := 1.0, 0
	mul := func(p float64) {
		if prod *= p; prod < 1e-200 {
			m, e := math.Frexp(prod)
			prod, exp = m, exp+e
		}
	}
	var sum float64
	if e.Order == nil {
		for i := range e.Bags {
			if c := e.Bags[i].Count; c > 0 {
				sum -= float64(c) * math.Log(uni(ids[i]))
				scored += uint64(c)
			}
		}
	} else {
		a, b, have := NoBag, NoBag, 0 // have: context windows available
		for _, o := range e.Order {
			if o == NoBag || int(o) >= len(ids) {
				a, b, have = NoBag, NoBag, 0
				continue
			}
			c := ids[o]
			p, pen := 0.0, 1.0
			if have >= 2 {
				if a != NoBag && b != NoBag && c != NoBag {
					if k := m.tri.get(triKey(a, b, c)); k > 0 {
						p = float64(k) / float64(max(m.bi.get(biKey(a, b)), k))
					}
				}
				pen *= Backoff
			}
			if p == 0 && have >= 1 {
				if b != NoBag && c != NoBag {
					if k := m.bi.get(biKey(b, c)); k > 0 {
						p = pen * float64(k) / float64(max(freq(b), k))
					}
				}
				pen *= Backoff
			}
			if p == 0 {
				p = pen * uni(c)
			}
			mul(p)
			scored++
			a, b = b, c
			have = min(have+1, 2)
		}
	}
	if scored == 0 {
		return 0, 0
	}
	sum -= math.Log(prod) + float64(exp)*math.Ln2
	return sum / float64(scored), scored
}

// WithSequence makes the profile also learn the order-3 model of its
// windows' bag sequence (the "lm" scorer's data). The profile's cap on bags
// must then stay within 2^21, and the cap applies to each n-gram level.
func WithSequence(on bool) Option { return func(c *config) { c.sequence = on } }

func (c *config) validateSequence() error {
	if c.sequence && c.maxBags > maxSeqBags {
		return fmt.Errorf("max bags %d > %d with a sequence model: %w", c.maxBags, maxSeqBags, ErrConfig)
	}
	return nil
}

// HasSequence reports whether the profile learns the sequence model.
func (p *Profile) HasSequence() bool { return p.seq != nil }
