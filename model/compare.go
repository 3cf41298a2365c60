package model

import (
	"context"
	"fmt"
)

// Scenario is one attack setting for the policy comparison.
type Scenario struct {
	Name   string
	Params Params
}

// PolicyRun is the survival curve of one policy in one scenario. Policy
// "static" is the no-migration baseline.
type PolicyRun struct {
	Scenario string
	Policy   string
	Result   *SimResult
}

// DefaultScenarios are the policy comparison's settings: Table I's largest
// network (V = 50) under constant, logistic and exponential attack growth,
// with t_d = 1 so detections happen and trigger migrations.
func DefaultScenarios() []Scenario {
	return []Scenario{
		{"constant N=5", Params{V: 50, N: 5, ApplyTd: true, Td: 1}},
		{"logistic N0=1 k=0.1 mu=10", Params{V: 50, N: 1, Growth: GrowthLogistic, K: 0.1, Mu: 10, ApplyTd: true, Td: 1}},
		{"exponential N0=1 k=0.03", Params{V: 50, N: 1, Growth: GrowthExponential, K: 0.03, ApplyTd: true, Td: 1}},
	}
}

// DefaultCompareOptions is the mobility used by the comparison: migrate
// every 5 time units and after every detected attack, exploits that fail
// half the time on another kernel (so heterogeneity can pay), and anomaly
// reports from 30% of hacked hosts per step.
func DefaultCompareOptions() []SimOption {
	return []SimOption{WithMigrateEvery(5), WithMigrateOnDetection(true), WithResistance(0.5), WithAnomalyReports(0.3, 5)}
}

// ComparePolicies runs the static baseline and the three destination
// policies in every scenario with the same seed (common random numbers for
// the start), opts applying to all of them.
func ComparePolicies(ctx context.Context, scenarios []Scenario, in Interpretation, opts ...SimOption) ([]PolicyRun, error) {
	var out []PolicyRun
	for _, sc := range scenarios {
		m, err := New(sc.Params, WithInterpretation(in))
		if err != nil {
			return nil, fmt.Errorf("comparing policies in %q: %w", sc.Name, err)
		}
		static, err := Simulate(ctx, m, append(append([]SimOption(nil), opts...), WithMigrateEvery(0), WithMigrateOnDetection(false))...)
		if err != nil {
			return nil, fmt.Errorf("comparing policies in %q (static): %w", sc.Name, err)
		}
		out = append(out, PolicyRun{sc.Name, "static", static})
		for _, p := range []SimPolicy{PolicyRandom, PolicyHeterogeneous, PolicyGuided} {
			r, err := Simulate(ctx, m, append(append([]SimOption(nil), opts...), WithSimPolicy(p))...)
			if err != nil {
				return nil, fmt.Errorf("comparing policies in %q (%v): %w", sc.Name, p, err)
			}
			out = append(out, PolicyRun{sc.Name, p.String(), r})
		}
	}
	return out, nil
}
