package eval

import "math"

// Backoff is the factor of the stupid-backoff n-gram model (Brants et al.
// 2007, their value, not tuned here): each step down to a shorter context
// multiplies the estimate by it.
const Backoff = 0.4

// lmScore is the 6-gram channel as a rarity, not a novelty: the mean over
// the trace's calls of −ln S(call | up to NGram−1 previous calls) under a
// stupid-backoff model of the database's n-grams:
//
//	S(x | h) = c(h x) / c(h)                 if c(h x) > 0 (h of k−1 calls, k ≥ 2)
//	         = Backoff · S(x | h minus its oldest call) otherwise
//	S(x)     = (c(x) + 1) / (N + V + 1)      (add-one unigram, V known calls)
//
// Unlike STIDE's share of unseen 6-grams it distinguishes a call that is
// novel after 5 calls but common after 2 from one never seen at all, and a
// seen-but-rare continuation from a frequent one. N and V are the full
// database's, also leave-one-out (see RefDB). A trace without calls scores 0.
func (v view) lmScore(calls []uint16) float64 {
	if len(calls) == 0 {
		return 0
	}
	var sum float64
	for i := range calls {
		p, pen := 0.0, 1.0
		for k := min(NGram, i+1); k >= 2; k-- {
			if c := v.count(gramOf(calls[i+1-k : i+1])); c > 0 {
				p = pen * float64(c) / float64(v.count(gramOf(calls[i+1-k:i])))
				break
			}
			pen *= Backoff
		}
		if p == 0 {
			c := v.count(gramOf(calls[i : i+1]))
			p = pen * (float64(c) + 1) / (float64(v.db.calls) + float64(v.db.vocab) + 1)
		}
		sum -= math.Log(p)
	}
	return sum / float64(len(calls))
}
