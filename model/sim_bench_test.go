package model

import (
	"context"
	"testing"
	"time"
)

// The inner loop must not allocate: a trial reuses the worker's buffers.
func TestTrialAllocatesNothing(t *testing.T) {
	for _, pol := range []SimPolicy{PolicyRandom, PolicyHeterogeneous, PolicyGuided} {
		m := mustModel(t, Params{V: 50, N: 1, Growth: GrowthLogistic, K: 1, Mu: 10, ApplyTd: true, Td: 0.5})
		cfg := defaultSimConfig()
		for _, o := range []SimOption{WithMigrateEvery(2), WithMigrateOnDetection(true), WithSimPolicy(pol)} {
			o(&cfg)
		}
		w, err := newWorld(m, cfg)
		if err != nil {
			t.Fatal(err)
		}
		st := newWorkerState(w)
		trial := 0
		if a := testing.AllocsPerRun(200, func() { st.runTrial(trial); trial++ }); a != 0 {
			t.Errorf("%v: %v allocations per trial, want 0", pol, a)
		}
	}
}

func benchSim(b *testing.B, p Params, opts ...SimOption) {
	m, err := New(p)
	if err != nil {
		b.Fatal(err)
	}
	opts = append([]SimOption{WithWorkers(1), WithTrials(2000)}, opts...)
	var hostSteps, moves int64
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		r, err := Simulate(context.Background(), m, append(opts, WithSeed(uint64(i)))...)
		if err != nil {
			b.Fatal(err)
		}
		hostSteps += r.HostSteps
		moves += r.PredatorMoves
	}
	sec := time.Since(start).Seconds()
	b.ReportMetric(float64(hostSteps)/sec/1e6, "Mhost-steps/s")
	b.ReportMetric(float64(moves)/sec/1e6, "Mpred-moves/s")
}

// One worker, so the metrics are per core. Table I scenarios with a low
// t_d keep the prey alive long enough for the loop to dominate setup.
func BenchmarkSimStaticV50N5(b *testing.B) {
	benchSim(b, Params{V: 50, N: 5, ApplyTd: true, Td: 0.2})
}

func BenchmarkSimMobileRandomV20N7(b *testing.B) {
	benchSim(b, Params{V: 20, N: 7, ApplyTd: true, Td: 0.2}, WithMigrateEvery(1))
}

func BenchmarkSimGuidedLogisticV50(b *testing.B) {
	benchSim(b, Params{V: 50, N: 1, Growth: GrowthLogistic, K: 0.1, Mu: 10, ApplyTd: true, Td: 0.2},
		WithMigrateEvery(5), WithMigrateOnDetection(true), WithSimPolicy(PolicyGuided), WithResistance(0.5))
}

// A large torus: per-step work is per predator, so host-steps/s grows
// with V; predator moves/s is the size-independent figure.
func BenchmarkSimTorusV10000N100(b *testing.B) {
	benchSim(b, Params{V: 10000, N: 100, ApplyTd: true, Td: 0.01}, WithTopology(TopologyTorus), WithTrials(200))
}

func BenchmarkRankDestinations50(b *testing.B) {
	hosts, err := SimHosts(TopologyGrid, 50, 3, 1)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Unix(1e9, 0)
	hosts[7].Compromised = true
	hosts[12].Anomalies = []time.Time{now.Add(-time.Minute), now.Add(-20 * time.Minute)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := RankDestinations("h000", hosts, now); err != nil {
			b.Fatal(err)
		}
	}
}
