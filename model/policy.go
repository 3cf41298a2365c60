package model

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// ErrNoEligibleHost is returned when every host is the source or flagged.
var ErrNoEligibleHost = errors.New("model: no eligible destination host")

// HostInfo is what the plane knows about one candidate host.
type HostInfo struct {
	Name        string
	Labels      map[string]string // e.g. datacenter, network, kernel, runtime, config
	Compromised bool              // flagged by an operator or by the plane
	Anomalies   []time.Time       // recent anomaly reports on that host
}

// Ranking is one candidate destination with its score and the reasons for it.
type Ranking struct {
	Host    string
	Score   float64
	Reasons []string // human-readable, for the plane's audit log
}

// RankDestinations ranks hosts for a container currently on source: far
// from predators (compromised hosts and hosts with recent anomalies, and
// their neighbours = same datacenter/network), far in heterogeneity (label
// differences) from the source. Never the source, never a compromised host.
// Deterministic for the same inputs, whatever their order (ties broken by
// name). Returns ErrNoEligibleHost when none qualify.
func RankDestinations(source string, hosts []HostInfo, now time.Time, opts ...PolicyOption) ([]Ranking, error) {
	cfg := defaultPolicyConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("ranking destinations: %w", err)
	}
	// Sort by name first so float sums run in one order for any input order.
	hs := append([]HostInfo(nil), hosts...)
	sort.Slice(hs, func(i, j int) bool { return hs[i].Name < hs[j].Name })
	src := -1
	for i, h := range hs {
		if h.Name == "" {
			return nil, fmt.Errorf("ranking destinations: %w: host %d has an empty name", ErrInvalidParam, i)
		}
		if i > 0 && hs[i-1].Name == h.Name {
			return nil, fmt.Errorf("ranking destinations: %w: duplicate host %q", ErrInvalidParam, h.Name)
		}
		if h.Name == source {
			src = i
		}
	}
	sc, keys := newScorerFromHosts(cfg, hs)
	pressure := make([]float64, len(hs))
	mass := make([]float64, len(hs))
	for i, h := range hs {
		mass[i] = cfg.anomalyMass(h.Anomalies, now)
		if h.Compromised {
			pressure[i] = 1
		} else {
			pressure[i] = pressureOf(mass[i])
		}
	}
	var out []Ranking
	for c, h := range hs {
		if c == src || h.Compromised {
			continue
		}
		score, safety, het := sc.score(src, c, pressure)
		out = append(out, Ranking{Host: h.Name, Score: score,
			Reasons: sc.reasons(hs, keys, src, c, pressure, mass, safety, het)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("ranking destinations from %q among %d hosts: %w", source, len(hosts), ErrNoEligibleHost)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Score != out[j].Score {
			return out[i].Score > out[j].Score
		}
		return out[i].Host < out[j].Host
	})
	return out, nil
}

func (c policyConfig) validate() error {
	for _, f := range []struct {
		n string
		v float64
	}{{"safety weight", c.safetyWeight}, {"heterogeneity weight", c.heteroWeight}, {"neighbour factor", c.neighbourFactor}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 {
			return fmt.Errorf("%w: %s=%v must be finite and >= 0", ErrInvalidParam, f.n, f.v)
		}
	}
	for k, w := range c.labelWeights {
		if math.IsNaN(w) || math.IsInf(w, 0) || w < 0 {
			return fmt.Errorf("%w: label weight %s=%v must be finite and >= 0", ErrInvalidParam, k, w)
		}
	}
	if c.halfLife <= 0 || c.window <= 0 {
		return fmt.Errorf("%w: anomaly half-life %v and window %v must be > 0", ErrInvalidParam, c.halfLife, c.window)
	}
	return nil
}

// anomalyMass sums 2^(−age/halfLife) over reports within the window; a
// report stamped after now (clock skew) counts as fresh.
func (c policyConfig) anomalyMass(ts []time.Time, now time.Time) float64 {
	var m float64
	for _, t := range ts {
		age := now.Sub(t)
		if age < 0 {
			age = 0
		}
		if age > c.window {
			continue
		}
		m += math.Exp2(-float64(age) / float64(c.halfLife))
	}
	return m
}

// newScorerFromHosts interns label values to dense ids, one dimension per
// label key seen on any host, keys in sorted order.
func newScorerFromHosts(cfg policyConfig, hs []HostInfo) (*scorer, []string) {
	keySet := map[string]bool{}
	for _, h := range hs {
		for k := range h.Labels {
			keySet[k] = true
		}
	}
	keys := make([]string, 0, len(keySet))
	for k := range keySet {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	sc := &scorer{cfg: cfg, weights: make([]float64, len(keys)), labels: make([][]int32, len(keys))}
	var nbDims []int
	for d, k := range keys {
		sc.weights[d] = 1
		if w, ok := cfg.labelWeights[k]; ok {
			sc.weights[d] = w
		}
		for _, nk := range cfg.neighbourLabels {
			if nk == k {
				nbDims = append(nbDims, d)
			}
		}
		ids := map[string]int32{}
		sc.labels[d] = make([]int32, len(hs))
		for i, h := range hs {
			v, ok := h.Labels[k]
			if !ok {
				sc.labels[d][i] = -1
				continue
			}
			id, seen := ids[v]
			if !seen {
				id = int32(len(ids))
				ids[v] = id
			}
			sc.labels[d][i] = id
		}
	}
	sc.buildNeighbours(len(hs), nbDims)
	return sc, keys
}

// reasons explains one candidate's score for the audit log.
func (s *scorer) reasons(hs []HostInfo, keys []string, src, c int, pressure, mass []float64, safety, het float64) []string {
	r := []string{fmt.Sprintf("safety %.3f, heterogeneity %.3f (weights %.2g/%.2g)",
		safety, het, s.cfg.safetyWeight, s.cfg.heteroWeight)}
	if src < 0 {
		r = append(r, "source host not in inventory: heterogeneity counts every label of the candidate as different")
	} else {
		var diff []string
		for d, k := range keys {
			la, lb := s.labels[d][src], s.labels[d][c]
			if s.weights[d] != 0 && la != lb {
				diff = append(diff, fmt.Sprintf("%s=%s (source %s)", k, hs[c].Labels[k], orNone(hs[src].Labels, k)))
			}
		}
		if len(diff) == 0 {
			r = append(r, "same labels as the source")
		} else {
			r = append(r, "differs from source in "+strings.Join(diff, ", "))
		}
	}
	if n := len(hs[c].Anomalies); n > 0 {
		r = append(r, fmt.Sprintf("%d anomaly report(s) on host, decayed weight %.2f", n, mass[c]))
	}
	for _, n := range s.nbrs[c] {
		switch {
		case hs[n].Compromised:
			r = append(r, fmt.Sprintf("neighbour %s is compromised", hs[n].Name))
		case pressure[n] > 0:
			r = append(r, fmt.Sprintf("neighbour %s has recent anomalies (pressure %.2f)", hs[n].Name, pressure[n]))
		}
	}
	return r
}

func orNone(m map[string]string, k string) string {
	if v, ok := m[k]; ok {
		return v
	}
	return "none"
}
