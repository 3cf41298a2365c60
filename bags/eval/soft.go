package eval

import (
	"iter"

	"github.com/escape-mtd/escape/bags"
)

// padding is the bags package's filler for the unused slots of a Bag
// (0xFFFF, sorted after every real syscall number).
const padding = 0xFFFF

// subBags yields the distinct (w−1)-call sub-multisets of a bag of w calls:
// the bag with one occurrence of each distinct call removed. Two bags of w
// calls are at L1 distance 2 (one call swapped for another) exactly when
// they share such a sub-multiset, so indexing the database by them finds a
// novel bag's nearest neighbours without a scan.
func subBags(b bags.Bag, w int) iter.Seq[bags.Bag] {
	return func(yield func(bags.Bag) bool) {
		for i := 0; i < w; i++ {
			if i > 0 && b[i] == b[i-1] {
				continue // same sub-multiset as dropping the previous copy
			}
			var s bags.Bag
			copy(s[:i], b[:i])
			copy(s[i:], b[i+1:])
			s[bags.MaxWindow-1] = padding
			if !yield(s) {
				return
			}
		}
	}
}

// softLevel is the distance of an unseen bag to the nearest database bag, in
// swapped calls, capped at 2: 1 when a known bag differs from it by one call
// (an attack that reorders or substitutes a single call of a normal
// pattern), 2 when every known bag differs by two or more. A seen bag is 0
// and is not passed here. The per-trace Soft score is the mean level over
// windows, halved into [0, 1], so it lies between bosc-frac/2 and bosc-frac.
func (v view) softLevel(b bags.Bag) float64 {
	for s := range subBags(b, v.db.W) {
		if v.near(s) {
			return 1
		}
	}
	return 2
}
