package model

import (
	"fmt"
	"math"
	"runtime"
)

// SimPolicy is how a migrating prey picks its next host.
type SimPolicy int

const (
	// PolicyRandom picks a uniform host other than the current one.
	PolicyRandom SimPolicy = iota
	// PolicyHeterogeneous picks the host whose labels differ most from the
	// current host's (ties: lowest name), ignoring predators.
	PolicyHeterogeneous
	// PolicyGuided is RankDestinations' top host, fed with what a plane
	// would know: flagged hosts and decayed anomaly reports.
	PolicyGuided
)

func (p SimPolicy) String() string {
	switch p {
	case PolicyRandom:
		return "random"
	case PolicyHeterogeneous:
		return "most-heterogeneous"
	case PolicyGuided:
		return "model-guided"
	}
	return fmt.Sprintf("policy(%d)", int(p))
}

// simConfig is the simulator's configuration; see the SimOption setters.
type simConfig struct {
	topology      Topology
	exposeNbrs    bool
	migrateEvery  int
	migrateOnDet  bool
	policy        SimPolicy
	policyOpts    []PolicyOption
	trials        int
	seed          uint64
	workers       int
	stepsPerUnit  int
	horizon       float64
	resistance    float64
	anomalyRate   float64
	halfLifeSteps float64
	labelVariety  int
}

func defaultSimConfig() simConfig {
	return simConfig{
		topology: TopologyGrid, exposeNbrs: true, trials: 10000, seed: 1,
		workers: runtime.GOMAXPROCS(0), stepsPerUnit: 1, horizon: 100,
		anomalyRate: 0.3, halfLifeSteps: 5, labelVariety: 3,
	}
}

// SimOption configures Simulate.
type SimOption func(*simConfig)

// WithTopology sets the host network's shape (default grid).
func WithTopology(t Topology) SimOption { return func(c *simConfig) { c.topology = t } }

// WithNeighbourExposure makes a predator on a neighbouring host threaten
// the prey, as the papers assume (default true).
func WithNeighbourExposure(on bool) SimOption { return func(c *simConfig) { c.exposeNbrs = on } }

// WithMigrateEvery migrates the prey every n steps; 0 keeps it static.
func WithMigrateEvery(n int) SimOption { return func(c *simConfig) { c.migrateEvery = n } }

// WithMigrateOnDetection migrates the prey right after a detected attack.
func WithMigrateOnDetection(on bool) SimOption { return func(c *simConfig) { c.migrateOnDet = on } }

// WithSimPolicy sets the destination policy of a migrating prey.
func WithSimPolicy(p SimPolicy, opts ...PolicyOption) SimOption {
	return func(c *simConfig) { c.policy, c.policyOpts = p, opts }
}

// WithTrials sets the number of Monte Carlo trials (default 10000).
func WithTrials(n int) SimOption { return func(c *simConfig) { c.trials = n } }

// WithSeed sets the run's seed; equal seeds give identical results.
func WithSeed(s uint64) SimOption { return func(c *simConfig) { c.seed = s } }

// WithWorkers sets the number of goroutines; results do not depend on it.
func WithWorkers(n int) SimOption { return func(c *simConfig) { c.workers = n } }

// WithStepsPerUnit sets walk steps per time unit (default 1).
func WithStepsPerUnit(n int) SimOption { return func(c *simConfig) { c.stepsPerUnit = n } }

// WithSimHorizon sets the simulated time (default 100, Table I).
func WithSimHorizon(t float64) SimOption { return func(c *simConfig) { c.horizon = t } }

// WithResistance is the chance r that an exploit built for one kernel
// fails on a host with another kernel: success is f·(1−r) there. It is
// what makes heterogeneity worth something in simulation (default 0).
func WithResistance(r float64) SimOption { return func(c *simConfig) { c.resistance = r } }

// WithAnomalyReports sets the per-step chance that a host holding a
// predator reports an anomaly, and the reports' half-life in steps.
func WithAnomalyReports(rate, halfLifeSteps float64) SimOption {
	return func(c *simConfig) { c.anomalyRate, c.halfLifeSteps = rate, halfLifeSteps }
}

// WithLabelVariety sets how many kernel/runtime/config versions exist.
func WithLabelVariety(n int) SimOption { return func(c *simConfig) { c.labelVariety = n } }

func (c simConfig) validate() error {
	bad := func(what string, v any) error {
		return fmt.Errorf("%w: simulator %s=%v", ErrInvalidParam, what, v)
	}
	switch {
	case c.trials < 1:
		return bad("trials (must be >= 1)", c.trials)
	case c.workers < 1:
		return bad("workers (must be >= 1)", c.workers)
	case c.stepsPerUnit < 1:
		return bad("steps-per-unit (must be >= 1)", c.stepsPerUnit)
	case !(c.horizon > 0) || math.IsInf(c.horizon, 0) || c.horizon*float64(c.stepsPerUnit) > 1e7:
		return bad("horizon (must be > 0 and horizon*steps-per-unit <= 1e7)", c.horizon)
	case c.migrateEvery < 0:
		return bad("migrate-every (must be >= 0)", c.migrateEvery)
	case !(c.resistance >= 0 && c.resistance <= 1):
		return bad("resistance (must be in [0,1])", c.resistance)
	case !(c.anomalyRate >= 0 && c.anomalyRate <= 1):
		return bad("anomaly rate (must be in [0,1])", c.anomalyRate)
	case !(c.halfLifeSteps > 0) || math.IsInf(c.halfLifeSteps, 0):
		return bad("anomaly half-life (must be > 0)", c.halfLifeSteps)
	case c.labelVariety < 1 || c.labelVariety > 1000:
		return bad("label variety (must be in [1,1000])", c.labelVariety)
	case c.policy < PolicyRandom || c.policy > PolicyGuided:
		return bad("policy", c.policy)
	}
	return nil
}

// SimResult is the estimated survival curve of one scenario.
type SimResult struct {
	Times    []float64 // time of each point, 0..horizon
	Survival []float64 // fraction of trials whose prey is alive at Times[i]
	Lo, Hi   []float64 // 95% Wilson score interval of Survival
	Trials   int
	// HostSteps is V × walk steps actually simulated (trials stop at death).
	HostSteps int64
	// PredatorMoves is the number of predator walk steps simulated.
	PredatorMoves int64
	// Migrations counts prey migrations over all trials.
	Migrations int64
}

// At returns the survival estimate and interval at the point nearest t.
func (r *SimResult) At(t float64) (p, lo, hi float64) {
	i := 0
	for j, x := range r.Times {
		if math.Abs(x-t) < math.Abs(r.Times[i]-t) {
			i = j
		}
	}
	return r.Survival[i], r.Lo[i], r.Hi[i]
}

// wilson is the 95% Wilson score interval for k successes in n trials; it
// stays inside [0, 1] and is honest near 0 and 1, unlike the normal one.
func wilson(k, n int64) (lo, hi float64) {
	const z = 1.959963984540054
	if n == 0 {
		return 0, 1
	}
	p := float64(k) / float64(n)
	nf := float64(n)
	den := 1 + z*z/nf
	mid := (p + z*z/(2*nf)) / den
	half := z * math.Sqrt(p*(1-p)/nf+z*z/(4*nf*nf)) / den
	return math.Max(0, mid-half), math.Min(1, mid+half)
}
