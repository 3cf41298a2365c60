package eval

import (
	"math"
	"sort"
)

// Channel is one per-trace score; higher is more anomalous.
type Channel func(Scores) float64

// rankScore combines channels by the mean of their empirical CDFs, each
// fitted on the normal selection scores only (no attack data): a trace's
// combined score is the average share of normal traces it out-scores.
func rankScore(chs []Channel, normal []Scores) Channel {
	cdfs := make([][]float64, len(chs))
	for i, f := range chs {
		cdfs[i] = pick(normal, f)
		sort.Float64s(cdfs[i])
	}
	return func(s Scores) float64 {
		var v float64
		for i, f := range chs {
			x, c := f(s), cdfs[i]
			v += float64(sort.Search(len(c), func(j int) bool { return c[j] > x })) / float64(len(c))
		}
		return v / float64(len(chs))
	}
}

// LogitL2 is the ridge penalty of the logistic combiner, on standardised
// channels; it only keeps the fit finite when the data are separable.
const LogitL2 = 1e-3

// fitLogit fits a class-balanced logistic regression of "attack" on the
// channels (each standardised by its mean and deviation on the normal
// training scores) and returns its linear score (the log-odds; monotone in
// the probability, so ROC and thresholds are the same). Both classes weigh
// one half in total, so the 10:1 imbalance of normal to attack traces does
// not push the fit to ignore the attacks. Newton's method (IRLS) on a
// handful of channels converges in a few steps; it is deterministic.
func fitLogit(chs []Channel, normal, attack []Scores) Channel {
	d := len(chs)
	mu, sd := make([]float64, d), make([]float64, d)
	for j, f := range chs {
		x := pick(normal, f)
		mu[j] = mean(x)
		for _, v := range x {
			sd[j] += (v - mu[j]) * (v - mu[j])
		}
		sd[j] = math.Sqrt(sd[j] / float64(max(1, len(x))))
		if sd[j] == 0 {
			sd[j] = 1
		}
	}
	feat := func(s Scores) []float64 {
		x := make([]float64, d+1)
		for j, f := range chs {
			x[j] = (f(s) - mu[j]) / sd[j]
		}
		x[d] = 1 // intercept
		return x
	}
	var xs [][]float64
	var ys, ws []float64
	for _, set := range []struct {
		ss []Scores
		y  float64
	}{{normal, 0}, {attack, 1}} {
		for _, s := range set.ss {
			xs = append(xs, feat(s))
			ys = append(ys, set.y)
			ws = append(ws, 0.5/float64(len(set.ss)))
		}
	}
	w := newtonLogit(xs, ys, ws, LogitL2)
	return func(s Scores) float64 { return dot(w, feat(s)) }
}

// newtonLogit minimises Σ wᵢ·logloss(yᵢ, σ(β·xᵢ)) + λ/2·|β without its last
// (intercept) coordinate|² by Newton steps.
func newtonLogit(xs [][]float64, ys, ws []float64, l2 float64) []float64 {
	if len(xs) == 0 {
		return nil
	}
	d := len(xs[0])
	beta := make([]float64, d)
	for it := 0; it < 50; it++ {
		g := make([]float64, d)
		h := make([][]float64, d)
		for j := range h {
			h[j] = make([]float64, d+1) // augmented with −g for the solve
		}
		for i, x := range xs {
			p := 1 / (1 + math.Exp(-dot(beta, x)))
			e, c := ws[i]*(p-ys[i]), ws[i]*p*(1-p)
			for j := range d {
				g[j] += e * x[j]
				for k := range d {
					h[j][k] += c * x[j] * x[k]
				}
			}
		}
		for j := 0; j < d-1; j++ {
			g[j] += l2 * beta[j]
			h[j][j] += l2
		}
		for j := range d {
			h[j][d] = -g[j]
		}
		step := solve(h)
		var norm float64
		for j := range d {
			beta[j] += step[j]
			norm += step[j] * step[j]
		}
		if norm < 1e-24 {
			break
		}
	}
	return beta
}

// solve solves the augmented system a (n×(n+1)) by Gaussian elimination
// with partial pivoting; a is overwritten.
func solve(a [][]float64) []float64 {
	n := len(a)
	for c := range n {
		p := c
		for r := c + 1; r < n; r++ {
			if math.Abs(a[r][c]) > math.Abs(a[p][c]) {
				p = r
			}
		}
		a[c], a[p] = a[p], a[c]
		if a[c][c] == 0 {
			continue
		}
		for r := c + 1; r < n; r++ {
			f := a[r][c] / a[c][c]
			for k := c; k <= n; k++ {
				a[r][k] -= f * a[c][k]
			}
		}
	}
	x := make([]float64, n)
	for r := n - 1; r >= 0; r-- {
		if a[r][r] == 0 {
			continue
		}
		v := a[r][n]
		for k := r + 1; k < n; k++ {
			v -= a[r][k] * x[k]
		}
		x[r] = v / a[r][r]
	}
	return x
}

func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// crossLogit gives out-of-fold scores of the logistic combiner for the dev
// columns: fold r holds the dev attacks of run r and every DevRuns-th normal
// selection trace; each fold is scored by a model fitted on the others.
func crossLogit(chs []Channel, normal, attack []Scores, runs []int, folds int) (ns, as []float64) {
	ns, as = make([]float64, len(normal)), make([]float64, len(attack))
	for r := 1; r <= folds; r++ {
		var fn, fa []Scores
		for i, s := range normal {
			if i%folds != r-1 {
				fn = append(fn, s)
			}
		}
		for i, s := range attack {
			if runs[i] != r {
				fa = append(fa, s)
			}
		}
		f := fitLogit(chs, fn, fa)
		for i, s := range normal {
			if i%folds == r-1 {
				ns[i] = f(s)
			}
		}
		for i, s := range attack {
			if runs[i] == r {
				as[i] = f(s)
			}
		}
	}
	return ns, as
}
