package eval

import (
	"math"
	"sort"
)

// AUC is the area under the ROC curve of higher-is-more-anomalous scores,
// computed as the Mann-Whitney statistic with ties counted half.
func AUC(normal, attack []float64) float64 {
	if len(normal) == 0 || len(attack) == 0 {
		return math.NaN()
	}
	n := append([]float64(nil), normal...)
	sort.Float64s(n)
	var sum float64
	for _, a := range attack {
		lo := sort.SearchFloat64s(n, a)                                 // normals < a
		hi := sort.Search(len(n), func(i int) bool { return n[i] > a }) // normals <= a
		sum += float64(lo) + 0.5*float64(hi-lo)
	}
	return sum / float64(len(normal)*len(attack))
}

// Rate returns the share of scores strictly above threshold.
func Rate(scores []float64, threshold float64) float64 {
	if len(scores) == 0 {
		return math.NaN()
	}
	k := 0
	for _, s := range scores {
		if s > threshold {
			k++
		}
	}
	return float64(k) / float64(len(scores))
}

// ThresholdAtFPR returns the smallest threshold t (from the normal scores)
// with Rate(normal, t) <= fpr: the rule "flag when score > t". Without
// normal scores there is no threshold: NaN, which flags nothing.
func ThresholdAtFPR(normal []float64, fpr float64) float64 {
	if len(normal) == 0 {
		return math.NaN()
	}
	n := append([]float64(nil), normal...)
	sort.Float64s(n)
	allowed := int(math.Floor(fpr*float64(len(n)) + 1e-9))
	// Flagging score > n[k] flags the normals above index k (ties included
	// in the unflagged side), so walk to the first k that flags <= allowed.
	for k := 0; k < len(n); k++ {
		above := len(n) - sort.Search(len(n), func(i int) bool { return n[i] > n[k] })
		if above <= allowed {
			return n[k]
		}
	}
	return n[len(n)-1]
}

// ROCPoint is one point of a ROC curve.
type ROCPoint struct{ FPR, TPR float64 }

// ROC returns the curve over all distinct thresholds, from (0,0) to (1,1).
func ROC(normal, attack []float64) []ROCPoint {
	all := append(append([]float64(nil), normal...), attack...)
	sort.Float64s(all)
	pts := []ROCPoint{{0, 0}}
	for i := len(all) - 1; i >= 0; i-- {
		if i < len(all)-1 && all[i] == all[i+1] {
			continue
		}
		t := all[i]
		pts = append(pts, ROCPoint{FPR: rateAtLeast(normal, t), TPR: rateAtLeast(attack, t)})
	}
	return pts
}

func rateAtLeast(s []float64, t float64) float64 {
	k := 0
	for _, x := range s {
		if x >= t {
			k++
		}
	}
	return float64(k) / float64(len(s))
}

// DRAtFPR reads the ROC curve: the best detection rate whose false-positive
// rate is at most fpr.
func DRAtFPR(normal, attack []float64, fpr float64) float64 {
	t := ThresholdAtFPR(normal, fpr)
	return Rate(attack, t)
}
