package model

import (
	"context"
	"errors"
	"math"
	"reflect"
	"testing"
)

func sim(t *testing.T, p Params, opts ...SimOption) *SimResult {
	t.Helper()
	r, err := Simulate(context.Background(), mustModel(t, p), opts...)
	if err != nil {
		t.Fatalf("Simulate(%+v): %v", p, err)
	}
	return r
}

// agree checks an estimate against an exact value with a z = 4 binomial
// band (a false alarm is a 1-in-15000 event per point, not a loose fudge).
func agree(t *testing.T, what string, est, exact float64, n int, extraVar float64) {
	t.Helper()
	sd := math.Sqrt(exact*(1-exact)/float64(n) + extraVar)
	if math.Abs(est-exact) > 4*sd+1e-12 {
		t.Errorf("%s: sim %.5f vs exact %.5f, |diff| %.5f > 4 sd (%.5f)", what, est, exact, math.Abs(est-exact), 4*sd)
	}
}

func TestSimReproducible(t *testing.T) {
	p := Params{V: 30, N: 1, Growth: GrowthLogistic, K: 1, Mu: 4, ApplyTd: true, Td: 1}
	base := []SimOption{WithTrials(3000), WithSeed(42), WithMigrateEvery(3), WithMigrateOnDetection(true), WithSimPolicy(PolicyGuided), WithResistance(0.3)}
	a := sim(t, p, append(base, WithWorkers(1))...)
	b := sim(t, p, append(base, WithWorkers(3))...)
	c := sim(t, p, append(base, WithWorkers(8))...)
	if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(a, c) {
		t.Fatal("same seed, different worker counts: results differ")
	}
	d := sim(t, p, append(base, WithSeed(43))...)
	if reflect.DeepEqual(a.Survival, d.Survival) {
		t.Error("different seeds gave identical curves")
	}
	if a.Migrations == 0 || a.HostSteps == 0 {
		t.Errorf("counters not filled: %+v", a)
	}
}

// On the complete graph a predator hops to a uniform other host, so a
// static prey's survival is an exact two-state Markov chain per predator:
// away → at with 1/(V−1) (attack succeeds with f), at → away surely.
func TestSimMatchesExactCompleteGraph(t *testing.T) {
	const v, n, trials = 20, 3, 20000
	for _, td := range []float64{0.2, 1, math.Inf(1)} {
		p := Params{V: v, N: n, ApplyTd: true, Td: td}
		m := mustModel(t, p)
		f := m.SuccessFraction()
		r := sim(t, p, WithTopology(TopologyComplete), WithNeighbourExposure(false), WithTrials(trials), WithSimHorizon(60))
		away, at := 1.0, 0.0
		q := 1.0 / (v - 1)
		for s := 1; s <= 60; s++ {
			away, at = away*(1-q)+at, away*q*(1-f)
			if s%10 == 0 {
				agree(t, "complete graph", r.Survival[s], math.Pow(away+at, n), trials, 0)
			}
		}
	}
}

// On the torus equation 1's structure holds exactly with the walk's own
// mean range in place of π t/ln t: P = ((1 − E[R]/V)/(1 − 1/V))^N.
func TestSimMatchesEquation1StructureOnTorus(t *testing.T) {
	const v, n, trials, rangeTrials = 100, 4, 20000, 40000
	rng, err := MeanRange(context.Background(), TopologyTorus, v, 40, rangeTrials, 7)
	if err != nil {
		t.Fatal(err)
	}
	r := sim(t, Params{V: v, N: n}, WithTopology(TopologyTorus), WithNeighbourExposure(false), WithTrials(trials), WithSimHorizon(40))
	for _, s := range []int{5, 10, 20, 40} {
		x := (1 - rng[s]/v) / (1 - 1.0/v)
		exact := math.Pow(x, n)
		// Error of E[R] propagated by the delta method; Var(R) <= (s+1)²/4 bounds it.
		dP := float64(n) * exact / x / (v - 1)
		agree(t, "torus eq.1 structure", r.Survival[s], exact, trials, dP*dP*float64((s+1)*(s+1))/4/rangeTrials)
	}
}

func TestSimLimits(t *testing.T) {
	for _, p := range []Params{{V: 20, N: 0}, {V: 20, N: 7, ApplyTd: true, Td: 0}} {
		r := sim(t, p, WithTrials(500), WithMigrateEvery(1))
		if r.Survival[len(r.Survival)-1] != 1 {
			t.Errorf("%+v: survival %v, want exactly 1", p, r.Survival[len(r.Survival)-1])
		}
	}
	// N = V: predators are independent walkers (they may share a host, as
	// in the theory), so the prey is not dead at once but is by the horizon.
	r := sim(t, Params{V: 20, N: 20}, WithTrials(500))
	if end := r.Survival[len(r.Survival)-1]; end != 0 {
		t.Errorf("N=V: survival at horizon %v, want 0", end)
	}
	for i := 1; i < len(r.Survival); i++ {
		if r.Survival[i] > r.Survival[i-1] || r.Lo[i] > r.Survival[i] || r.Hi[i] < r.Survival[i] {
			t.Fatalf("curve not monotone or CI not bracketing at %d", i)
		}
	}
}

func TestSimBadConfig(t *testing.T) {
	m := mustModel(t, Params{V: 14, N: 2}) // 14 = 7×2: no 3×3-or-wider torus
	for name, o := range map[string]SimOption{
		"trials": WithTrials(0), "workers": WithWorkers(0), "horizon": WithSimHorizon(math.NaN()),
		"resist": WithResistance(2), "torus": WithTopology(TopologyTorus), "spu": WithStepsPerUnit(0),
	} {
		if _, err := Simulate(context.Background(), m, o); !errors.Is(err, ErrInvalidParam) {
			t.Errorf("%s: err = %v, want ErrInvalidParam", name, err)
		}
	}
	if _, err := Simulate(context.Background(), mustModel(t, Params{V: 20.5, N: 2})); !errors.Is(err, ErrInvalidParam) {
		t.Errorf("fractional V: err = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Simulate(ctx, m); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v, want context.Canceled", err)
	}
}

func TestWilson(t *testing.T) {
	lo, hi := wilson(50, 100)
	near(t, "wilson lo", lo, 0.4038315, 1e-5) // textbook value for 50/100
	near(t, "wilson hi", hi, 0.5961685, 1e-5)
	if lo, hi := wilson(0, 10); lo != 0 || hi <= 0 {
		t.Errorf("wilson(0,10) = %v,%v", lo, hi)
	}
}
