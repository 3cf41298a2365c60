package model

import (
	"math"
	"time"
)

// policyConfig holds the destination policy's weights. The defaults favour
// safety (distance from predators) over heterogeneity because a host next
// to a live attacker is lost whatever its configuration.
type policyConfig struct {
	safetyWeight    float64
	heteroWeight    float64
	neighbourFactor float64
	neighbourLabels []string
	labelWeights    map[string]float64
	halfLife        time.Duration
	window          time.Duration
}

func defaultPolicyConfig() policyConfig {
	return policyConfig{
		safetyWeight:    0.6,
		heteroWeight:    0.4,
		neighbourFactor: 0.5,
		neighbourLabels: []string{"datacenter", "network"},
		halfLife:        10 * time.Minute,
		window:          time.Hour,
	}
}

// PolicyOption tunes RankDestinations (and the simulator's guided policy).
type PolicyOption func(*policyConfig)

// WithWeights sets the weights of safety (far from predators) and of
// heterogeneity from the source in the score; both must be >= 0.
func WithWeights(safety, heterogeneity float64) PolicyOption {
	return func(c *policyConfig) { c.safetyWeight, c.heteroWeight = safety, heterogeneity }
}

// WithNeighbourFactor sets β, how much a neighbour's predator pressure
// counts against a candidate (the papers: neighbours of a hacked host are
// susceptible to the same attack).
func WithNeighbourFactor(beta float64) PolicyOption {
	return func(c *policyConfig) { c.neighbourFactor = beta }
}

// WithNeighbourLabels sets which labels make two hosts neighbours when
// equal (default datacenter and network).
func WithNeighbourLabels(keys ...string) PolicyOption {
	return func(c *policyConfig) { c.neighbourLabels = append([]string(nil), keys...) }
}

// WithLabelWeights weighs label keys in the heterogeneity distance
// (default 1 each; a key with weight 0 is ignored).
func WithLabelWeights(w map[string]float64) PolicyOption {
	return func(c *policyConfig) {
		c.labelWeights = make(map[string]float64, len(w))
		for k, v := range w {
			c.labelWeights[k] = v
		}
	}
}

// WithAnomalyDecay sets the half-life of an anomaly report's weight and the
// window after which it is forgotten.
func WithAnomalyDecay(halfLife, window time.Duration) PolicyOption {
	return func(c *policyConfig) { c.halfLife, c.window = halfLife, window }
}

// scorer is the policy's numeric core over dense host indices. Both
// RankDestinations and the simulator's guided policy run it, so the policy
// that is compared in simulation is the one the plane uses.
type scorer struct {
	cfg     policyConfig
	weights []float64 // per label dimension
	labels  [][]int32 // labels[d][h]: value id, -1 when host h lacks key d
	nbrs    [][]int32 // label neighbours of each host
}

// heterogeneity is the weighted fraction of label keys (present on either
// host) whose values differ; a key missing on one side counts as different.
func (s *scorer) heterogeneity(a, b int) float64 {
	var diff, total float64
	for d, w := range s.weights {
		la, lb := int32(-1), s.labels[d][b]
		if a >= 0 { // a < 0: source not in the inventory, it has no labels
			la = s.labels[d][a]
		}
		if w == 0 || (la < 0 && lb < 0) {
			continue
		}
		total += w
		if la != lb {
			diff += w
		}
	}
	if total == 0 {
		return 0
	}
	return diff / total
}

// exposure is the candidate's own predator pressure plus β times its
// neighbours' pressure; pressure is 1 for a compromised host.
func (s *scorer) exposure(c int, pressure []float64) float64 {
	e := pressure[c]
	for _, n := range s.nbrs[c] {
		e += s.cfg.neighbourFactor * pressure[n]
	}
	return e
}

// score combines safety = e^(−exposure) and heterogeneity into [0, 1].
func (s *scorer) score(src, c int, pressure []float64) (score, safety, het float64) {
	safety = math.Exp(-s.exposure(c, pressure))
	het = s.heterogeneity(src, c)
	sum := s.cfg.safetyWeight + s.cfg.heteroWeight
	if sum == 0 {
		return 0, safety, het
	}
	return (s.cfg.safetyWeight*safety + s.cfg.heteroWeight*het) / sum, safety, het
}

// buildNeighbours links hosts that share any neighbour label value.
func (s *scorer) buildNeighbours(n int, dims []int) {
	s.nbrs = make([][]int32, n)
	for a := 0; a < n; a++ {
		for b := 0; b < n; b++ {
			if a == b {
				continue
			}
			for _, d := range dims {
				if la := s.labels[d][a]; la >= 0 && la == s.labels[d][b] {
					s.nbrs[a] = append(s.nbrs[a], int32(b))
					break
				}
			}
		}
	}
}

// pressureOf turns a decayed anomaly mass into a [0, 1) pressure.
func pressureOf(mass float64) float64 { return -math.Expm1(-mass) }
