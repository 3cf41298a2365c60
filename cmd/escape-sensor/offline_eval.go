package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/escape-mtd/escape/bags/eval"
	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/spf13/cobra"
)

func newEvalCmd() *cobra.Command {
	var root, figs, md string
	var window, epoch int
	var target float64
	var windows []int
	var variants, roc string
	var devRuns, k, folds int
	var verbose, list, ceiling bool
	c := &cobra.Command{
		Use:   "eval [flags]",
		Short: "Evaluate BoSC and its improvements on ADFA-LD (ROC, DR at FPR, sweeps, figures)",
		Long: `eval trains on Training_Data_Master, chooses thresholds on half of the
validation traces (A), and reports false positives on the other half (B) and
detection on Attack_Data_Master: ROC AUC, DR at 1/5/10% FPR, the held-out
threshold's DR/FPR, the papers' epoch x threshold grid and a window sweep.
Attack runs 1..--dev-runs of each family are the only attacks any fitted
choice sees (the logistic combiner, the supervised variant's references);
the reported columns use the other runs. --list-variants names the scoring
rules; --variants runs a subset. Figures (PNG+SVG) go to --figures.

Beside the per-trace table, a SESSION VIEW scores each attack run (one
Attack_Data_Master folder) by the max / top-3 mean of its traces' scores,
against normal pseudo-sessions of consecutive validation traces sized like
the runs; it is labelled as such and never replaces the per-trace figures.
--ceiling adds the per-trace ceiling: exact duplicates of normal traces
among the held-out attacks, the resulting bound on DR for any per-trace
detector, and the traces no novelty detector can see (every n-gram and bag
already in the normal data). --fold-check N re-chooses the +A-loo thresholds
on validation A scored with N folds left out, by pseudo-session and by
trace, to measure what leaving out one trace at a time does to them.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if list {
				for _, v := range eval.AllVariants() {
					fmt.Fprintf(c.OutOrStdout(), "%-28s %s\n", v.Name, v.Help)
				}
				return nil
			}
			log := offlineLogger(verbose)
			defer log.Sync()
			cfg := eval.DefaultConfig(root)
			cfg.Window, cfg.Epoch, cfg.TargetFPR, cfg.Log = window, epoch, target, log
			if len(windows) > 0 {
				cfg.Windows = windows
			}
			cfg.Variants, cfg.ROC = eval.SplitVariantNames(variants), eval.SplitVariantNames(roc)
			cfg.DevRuns, cfg.KNN, cfg.Ceiling, cfg.FoldCheck = devRuns, k, ceiling, folds
			r, err := eval.Run(c.Context(), cfg)
			if err != nil {
				return fmt.Errorf("eval: %w", err)
			}
			if figs != "" {
				if err := os.MkdirAll(figs, 0o755); err != nil {
					return fmt.Errorf("eval: %w", err)
				}
				if err := eval.WriteFigures(r, figs); err != nil {
					return fmt.Errorf("eval: %w", err)
				}
				log.Info("figures written: " + filepath.Join(figs, "{roc,roc_low,sweep_dr,sweep_fpr,window_auc}.{png,svg}"))
			}
			var report bytes.Buffer
			if err := r.WriteMarkdown(&report); err != nil {
				return fmt.Errorf("eval: render report: %w", err)
			}
			if md != "" {
				// Whole or not at all: an earlier report survives a failed run.
				if err := atomicfile.WriteFile(md, report.Bytes(), 0o644); err != nil {
					return fmt.Errorf("eval: write %s: %w", md, err)
				}
			}
			_, err = c.OutOrStdout().Write(report.Bytes())
			return err
		},
	}
	c.Flags().StringVar(&root, "adfa", "../shared/datasets/adfa-ld", "ADFA-LD root")
	c.Flags().StringVar(&figs, "figures", "docs/figures/bosc", "directory for PNG+SVG figures (empty: none)")
	c.Flags().StringVar(&md, "markdown", "", "also write the tables to this file")
	c.Flags().IntVarP(&window, "window", "w", 10, "window size of the main comparison")
	c.Flags().IntVarP(&epoch, "epoch", "e", 1000, "epoch length of the papers' rule in the main comparison")
	c.Flags().Float64Var(&target, "target-fpr", 0.05, "FPR target for thresholds chosen on validation A")
	c.Flags().IntSliceVar(&windows, "windows", nil, "window sizes to sweep (default 2,4,6,8,10,12,16)")
	// Plain strings, split by eval.SplitVariantNames: some names hold commas
	// inside parentheses, which a slice flag would cut.
	c.Flags().StringVar(&variants, "variants", "", "variants to report, comma-separated (default all; see --list-variants)")
	c.Flags().StringVar(&roc, "roc", "", "variants drawn in roc.* and roc_low.* (default: papers' BoSC and the main improvements)")
	c.Flags().BoolVar(&list, "list-variants", false, "list the variants and exit")
	c.Flags().IntVar(&devRuns, "dev-runs", 5, "attack runs 1..N of each family form the dev (model-selection) subset")
	c.Flags().IntVar(&k, "knn", 1, "neighbours of the knn-bosc scorer")
	c.Flags().BoolVar(&ceiling, "ceiling", false, "also measure the per-trace ceiling (exact duplicates, novelty coverage) on the held-out split")
	c.Flags().IntVar(&folds, "fold-check", 0, "also choose the +A-loo thresholds on A scored with N folds left out, by pseudo-session and by trace (0: off; N >= 2, about 4 s per fold)")
	c.Flags().BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	return c
}
