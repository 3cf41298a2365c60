package model

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
)

// world is the immutable part of a simulation, shared by all workers.
type world struct {
	cfg     simConfig
	g       *graph
	v       int
	steps   int
	nAt     []float64 // target predator count per step (before rounding)
	maxPred int
	fSame   float64 // attack success on a host whose kernel the exploit targets
	fDiff   float64 // attack success on any other kernel
	kernel  []int32
	sc      *scorer   // guided policy core, same as RankDestinations'
	het     []float32 // het[a*v+b], for the heterogeneous policy
	decay   float64   // per-step anomaly decay factor
}

// Simulate runs the Monte Carlo prey-vs-predator game for the model's
// parameters (V, N(t), t_d under the model's interpretation) and returns
// the prey's survival curve with 95% intervals. Trials run in parallel;
// the result depends only on the parameters and the seed.
func Simulate(ctx context.Context, m *Model, opts ...SimOption) (*SimResult, error) {
	cfg := defaultSimConfig()
	for _, o := range opts {
		o(&cfg)
	}
	w, err := newWorld(m, cfg)
	if err != nil {
		return nil, fmt.Errorf("simulating %s: %w", m.p.Growth, err)
	}
	const chunk = 64
	var next atomic.Int64
	nw := min(cfg.workers, (cfg.trials+chunk-1)/chunk)
	stats := make([]*workerStats, nw)
	var wg sync.WaitGroup
	for i := range nw {
		st := newWorkerState(w)
		stats[i] = &st.stats
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				lo := int(next.Add(chunk)) - chunk
				if lo >= cfg.trials {
					return
				}
				for t := lo; t < min(lo+chunk, cfg.trials); t++ {
					st.runTrial(t)
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("simulating %s: %w", m.p.Growth, err)
	}
	return w.aggregate(stats), nil
}

func newWorld(m *Model, cfg simConfig) (*world, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	v := int(m.p.V)
	if float64(v) != m.p.V {
		return nil, fmt.Errorf("%w: simulator needs an integer V, got %v", ErrInvalidParam, m.p.V)
	}
	g, err := buildGraph(cfg.topology, v)
	if err != nil {
		return nil, err
	}
	w := &world{cfg: cfg, g: g, v: v, maxPred: v}
	w.steps = int(math.Round(cfg.horizon * float64(cfg.stepsPerUnit)))
	w.nAt = make([]float64, w.steps+1)
	for s := range w.nAt {
		w.nAt[s] = math.Min(m.NAt(float64(s)/float64(cfg.stepsPerUnit)), float64(v))
	}
	w.fSame = m.SuccessFraction()
	w.fDiff = w.fSame * (1 - cfg.resistance)
	w.decay = math.Exp2(-1 / cfg.halfLifeSteps)
	hosts := simHosts(g, cfg.labelVariety, cfg.seed)
	pc := defaultPolicyConfig()
	for _, o := range cfg.policyOpts {
		o(&pc)
	}
	if err := pc.validate(); err != nil {
		return nil, err
	}
	w.kernel = make([]int32, v)
	for h := range v {
		w.kernel[h] = int32(hostKernel(hosts[h]))
	}
	// The scorer's label-neighbour lists and the heterogeneity matrix are
	// O(V²): build them only for the policies that read them.
	if cfg.policy == PolicyGuided || cfg.policy == PolicyHeterogeneous {
		w.sc, _ = newScorerFromHosts(pc, hosts)
	}
	if cfg.policy == PolicyHeterogeneous {
		w.het = make([]float32, v*v)
		for h := range v {
			for c := range v {
				w.het[h*v+c] = float32(w.sc.heterogeneity(h, c))
			}
		}
	}
	return w, nil
}

// SimHosts returns the labelled inventory the simulator uses for V hosts:
// datacenter = grid quadrant, network = grid row, and kernel, runtime and
// config drawn from variety versions with the seed. Host i is "h%03d".
func SimHosts(topology Topology, v, variety int, seed uint64) ([]HostInfo, error) {
	g, err := buildGraph(topology, v)
	if err != nil {
		return nil, fmt.Errorf("building simulated inventory: %w", err)
	}
	return simHosts(g, variety, seed), nil
}

func simHosts(g *graph, variety int, seed uint64) []HostInfo {
	r := rng{s: splitmix64(seed ^ 0x5eed1abe15)}
	w := g.width
	rows := (g.v + w - 1) / w
	hs := make([]HostInfo, g.v)
	for h := range hs {
		row, col := h/w, h%w
		dc := 2*(2*row/max(rows, 1)) + 2*col/max(w, 1)
		hs[h] = HostInfo{Name: fmt.Sprintf("h%03d", h), Labels: map[string]string{
			"datacenter": fmt.Sprintf("dc%d", dc),
			"network":    fmt.Sprintf("net%d", row),
			"kernel":     fmt.Sprintf("k%d", r.intn(variety)),
			"runtime":    fmt.Sprintf("r%d", r.intn(variety)),
			"config":     fmt.Sprintf("c%d", r.intn(variety)),
		}}
	}
	return hs
}

func hostKernel(h HostInfo) int {
	var k int
	fmt.Sscanf(h.Labels["kernel"], "k%d", &k)
	return k
}

// aggregate sums the workers' integer histograms (order-free, so exact and
// deterministic) and turns deaths per step into a survival curve.
func (w *world) aggregate(stats []*workerStats) *SimResult {
	n := w.steps + 1
	deaths := make([]int64, n)
	r := &SimResult{Trials: w.cfg.trials}
	for _, s := range stats {
		for i, d := range s.deaths {
			deaths[i] += d
		}
		r.HostSteps += s.hostSteps
		r.PredatorMoves += s.moves
		r.Migrations += s.migrations
	}
	r.Times, r.Survival, r.Lo, r.Hi = make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	alive := int64(w.cfg.trials)
	for s := range n {
		alive -= deaths[s]
		r.Times[s] = float64(s) / float64(w.cfg.stepsPerUnit)
		r.Survival[s] = float64(alive) / float64(w.cfg.trials)
		r.Lo[s], r.Hi[s] = wilson(alive, int64(w.cfg.trials))
	}
	return r
}
