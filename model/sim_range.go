package model

import (
	"context"
	"fmt"
)

// MeanRange estimates E[R(s)], the mean number of distinct hosts one
// random walker has visited after s steps (start included), for s = 0..steps.
// It is the simulator's own S(t): on a vertex-transitive graph (torus,
// complete) a static prey survives one walker started off its host with
// probability exactly (1 − E[R]/V)/(1 − 1/V), so equation 1's structure
// can be checked apart from the π t / ln t approximation.
func MeanRange(ctx context.Context, topology Topology, v, steps, trials int, seed uint64) ([]float64, error) {
	g, err := buildGraph(topology, v)
	if err != nil {
		return nil, fmt.Errorf("estimating mean range: %w", err)
	}
	if steps < 0 || trials < 1 {
		return nil, fmt.Errorf("estimating mean range: %w: steps=%d trials=%d", ErrInvalidParam, steps, trials)
	}
	sum := make([]int64, steps+1)
	seen := make([]uint64, (v+63)/64)
	for t := range trials {
		if t%1024 == 0 && ctx.Err() != nil {
			return nil, fmt.Errorf("estimating mean range: %w", ctx.Err())
		}
		r := trialRNG(seed, t)
		clear(seen)
		p := int32(r.intn(v))
		set(seen, p)
		n := int64(1)
		sum[0]++
		for s := 1; s <= steps; s++ {
			nb := g.neighbours(int(p))
			p = nb[r.intn(len(nb))]
			if !has(seen, p) {
				set(seen, p)
				n++
			}
			sum[s] += n
		}
	}
	out := make([]float64, steps+1)
	for i, s := range sum {
		out[i] = float64(s) / float64(trials)
	}
	return out, nil
}
