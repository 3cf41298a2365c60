package main

import (
	"bytes"
	"fmt"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/bags/eval"
	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/spf13/cobra"
)

func newEvalOnlineCmd() *cobra.Command {
	cfg := eval.DefaultSlowAttackConfig("")
	var md string
	var verbose bool
	c := &cobra.Command{
		Use:   "eval-online [flags]",
		Short: "Measure a slow attacker against online learning on ADFA-LD, with the poisoning guard and without",
		Long: `eval-online learns ADFA-LD's training traces as the daemon learns an
identity (threshold at --target-fpr of validation half A's epochs), then
plays validation half B as normal traffic, one epoch a second, and slips a
held-out attack trace's windows into every epoch, a share --rates of its
windows. Below-threshold epochs teach the profile, at once (no guard) or
through the daemon's guard (quarantine, voided by an anomaly, rate limit).
It reports how many epochs pass until the attack trace alone is no longer
flagged, median over --seeds.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			log := offlineLogger(verbose)
			defer log.Sync()
			cfg.Log = log
			r, err := eval.SlowAttack(c.Context(), cfg)
			if err != nil {
				return fmt.Errorf("eval-online: %w", err)
			}
			var report bytes.Buffer
			if err := r.WriteMarkdown(&report); err != nil {
				return fmt.Errorf("eval-online: render report: %w", err)
			}
			if md != "" {
				if err := atomicfile.WriteFile(md, report.Bytes(), 0o644); err != nil {
					return fmt.Errorf("eval-online: write %s: %w", md, err)
				}
			}
			_, err = c.OutOrStdout().Write(report.Bytes())
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.Root, "adfa", "../shared/datasets/adfa-ld", "ADFA-LD root")
	f.StringVar(&md, "markdown", "", "also write the table to this file")
	f.IntVarP(&cfg.Window, "window", "w", cfg.Window, "window size")
	f.IntVarP(&cfg.Epoch, "epoch", "e", cfg.Epoch, "epoch length in calls (windows)")
	f.StringSliceVar(&cfg.Rules, "scorers", cfg.Rules, "scoring rules measured")
	f.Float64SliceVar(&cfg.Rates, "rates", cfg.Rates, "the attacker's share of each epoch's windows")
	f.IntVar(&cfg.Seeds, "seeds", cfg.Seeds, "runs per scorer, rate and arm (median reported)")
	f.IntVar(&cfg.MaxEpochs, "max-epochs", cfg.MaxEpochs, "a run that has not learned the attack by then is censored")
	f.IntVar(&cfg.Check, "check", cfg.Check, "probe the attack every this many epochs")
	f.Float64Var(&cfg.TargetFPR, "target-fpr", cfg.TargetFPR, "threshold: this share of validation-A epochs over it")
	f.DurationSliceVar(&cfg.Quarantines, "learn-quarantine", cfg.Quarantines, "the guarded arms' quarantines (one arm each; one epoch a second)")
	f.Float64Var(&cfg.Guard.Rate, "learn-rate", bags.DefaultTeachRate, "the guard's rate: epochs a minute")
	f.IntVar(&cfg.Guard.Queue, "learn-queue", bags.DefaultQuarantineQueue, "the guard's queue")
	f.IntVar(&cfg.MinAttackCalls, "min-attack-calls", cfg.MinAttackCalls, "attack traces shorter than this are not used")
	f.IntVar(&cfg.DevRuns, "dev-runs", cfg.DevRuns, "attack runs 1..N of each family are left out (the dev split)")
	f.BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	return c
}
