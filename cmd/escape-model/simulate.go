package main

import (
	"fmt"
	"math"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/escape-mtd/escape/model"
)

var (
	growthNames   = map[string]model.Growth{"constant": model.GrowthConstant, "exponential": model.GrowthExponential, "logistic": model.GrowthLogistic}
	topologyNames = map[string]model.Topology{"grid": model.TopologyGrid, "torus": model.TopologyTorus, "complete": model.TopologyComplete}
	policyNames   = map[string]model.SimPolicy{"random": model.PolicyRandom, "heterogeneous": model.PolicyHeterogeneous, "guided": model.PolicyGuided}
)

func pick[T any](m map[string]T, flag, v string) (T, error) {
	x, ok := m[v]
	if !ok {
		var zero T
		return zero, fmt.Errorf("--%s=%q: unknown value", flag, v)
	}
	return x, nil
}

func newSimulateCmd() *cobra.Command {
	var c common
	var p model.Params
	var growth, topology, policy string
	var horizon, every, resistance float64
	var migrateEvery int
	var onDetection, exposure bool
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Print closed-form and simulated survival for one scenario",
		Example: "  escape-model simulate --v 20 --n 7 --td 0.5 --migrate-every 1 --policy guided\n" +
			"  escape-model simulate --v 20 --n 1 --growth logistic --k 2 --mu 4 --interp rho=integrated",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if p.Growth, err = pick(growthNames, "growth", growth); err != nil {
				return err
			}
			top, err := pick(topologyNames, "topology", topology)
			if err != nil {
				return err
			}
			pol, err := pick(policyNames, "policy", policy)
			if err != nil {
				return err
			}
			p.ApplyTd = cmd.Flags().Changed("td")
			in, err := c.interpretation()
			if err != nil {
				return err
			}
			m, err := model.New(p, model.WithInterpretation(in))
			if err != nil {
				return err
			}
			opts := append(c.simOptions(), model.WithTopology(top), model.WithSimHorizon(horizon),
				model.WithMigrateEvery(migrateEvery), model.WithMigrateOnDetection(onDetection),
				model.WithSimPolicy(pol), model.WithResistance(resistance), model.WithNeighbourExposure(exposure))
			r, err := model.Simulate(cmd.Context(), m, opts...)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 2, ' ', 0)
			fmt.Fprintf(w, "# interpretation: %s\n# N(t) growth=%v, f(td)=%.4f, trials=%d, host-steps=%d\n",
				in, p.Growth, m.SuccessFraction(), r.Trials, r.HostSteps)
			fmt.Fprintln(w, "t\tN(t)\tP_static eq1\tP_mobile eq2\tsim\tlo95\thi95")
			for i, t := range r.Times {
				if every > 0 && math.Mod(t+1e-9, every) > 1e-6 && i != len(r.Times)-1 {
					continue
				}
				s, errS := m.Static(t)
				mo, errM := m.Mobile(t)
				fmt.Fprintf(w, "%g\t%.3f\t%s\t%s\t%.4f\t%.4f\t%.4f\n", t, m.NAt(t), num(s, errS), num(mo, errM), r.Survival[i], r.Lo[i], r.Hi[i])
			}
			return w.Flush()
		},
	}
	c.register(cmd, 10000)
	f := cmd.Flags()
	f.Float64Var(&p.V, "v", 20, "total hosts V")
	f.Float64Var(&p.N, "n", 1, "hacked hosts N (N(0) for growth)")
	f.StringVar(&growth, "growth", "constant", "constant|exponential|logistic")
	f.Float64Var(&p.K, "k", 1, "growth rate k")
	f.Float64Var(&p.Mu, "mu", 4, "logistic carrying capacity mu")
	f.Float64Var(&p.Td, "td", 0, "detection time t_d (equation 3 applies only when set)")
	f.Float64Var(&horizon, "horizon", 100, "simulated time")
	f.Float64Var(&every, "every", 10, "print every this many time units (0 = all)")
	f.StringVar(&topology, "topology", "grid", "grid|torus|complete")
	f.IntVar(&migrateEvery, "migrate-every", 0, "migrate the prey every n steps (0 = static)")
	f.BoolVar(&onDetection, "on-detection", false, "migrate after each detected attack")
	f.StringVar(&policy, "policy", "random", "destination policy: random|heterogeneous|guided")
	f.Float64Var(&resistance, "resistance", 0, "chance an exploit fails on another kernel")
	f.BoolVar(&exposure, "exposure", true, "neighbours of hacked hosts are exposed")
	return cmd
}

func num(x float64, err error) string {
	if err != nil {
		return "undefined"
	}
	return fmt.Sprintf("%.4g", x)
}
