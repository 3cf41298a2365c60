// Command escape-model evaluates the ESCAPE papers' prey-vs-predator model:
// it reproduces Figures 4–9, runs the Monte Carlo simulator, and compares
// destination policies.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/spf13/cobra"

	"github.com/escape-mtd/escape/model"
)

// version is set at link time by the Makefile (-X main.version=...).
var version = "dev"

// common are the flags every subcommand shares.
type common struct {
	interp  string
	trials  int
	seed    uint64
	workers int
}

func (c *common) register(cmd *cobra.Command, trials int) {
	f := cmd.Flags()
	f.StringVar(&c.interp, "interp", "", "interpretation, key=value,... (small-t=clamp|shift|literal, T=t|horizon|renewal, rho=instant|integrated|average, td=window|inverted, logistic=as-written|hold|reject, capN, capS, horizon, period)")
	f.IntVar(&c.trials, "trials", trials, "Monte Carlo trials per curve")
	f.Uint64Var(&c.seed, "seed", 1, "simulation seed (equal seeds give identical results)")
	f.IntVar(&c.workers, "workers", 0, "worker goroutines (0 = GOMAXPROCS; results do not depend on it)")
}

func (c *common) interpretation() (model.Interpretation, error) {
	return model.ParseInterpretation(c.interp)
}

func (c *common) simOptions() []model.SimOption {
	o := []model.SimOption{model.WithTrials(c.trials), model.WithSeed(c.seed)}
	if c.workers > 0 {
		o = append(o, model.WithWorkers(c.workers))
	}
	return o
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "escape-model",
		Short:         "ESCAPE's prey-vs-predator model: closed forms, simulation, destination policies",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newFiguresCmd(), newSimulateCmd(), newCompareCmd())
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "escape-model:", err)
		os.Exit(1)
	}
}
