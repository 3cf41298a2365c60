package main

import (
	"fmt"
	"os"

	"github.com/escape-mtd/escape/bags"
	"github.com/spf13/cobra"
)

func newProfileCmd() *cobra.Command {
	c := &cobra.Command{Use: "profile", Short: "Inspect, export and import BoSC profiles (host migration)"}
	c.AddCommand(&cobra.Command{
		Use:   "show FILE",
		Short: "Verify a profile and print its configuration and counters",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			p, err := bags.LoadFile(args[0])
			if err != nil {
				return err
			}
			s := p.Stats()
			sc, err := bags.NewScorer(p.Rule(), p)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			fmt.Fprintf(c.OutOrStdout(), "%s: workload %q arch %s W=%d E=%d T=%d bags %d trained windows %d epochs %d stopped %v learned-online %d overflow %d bags/%d windows scorer %s threshold %g sequence %v learning-complete %v\n",
				args[0], p.Workload(), p.Arch(), p.Window(), p.EpochLen(), p.Threshold(), s.Bags,
				s.TrainedWindows, s.TrainedEpochs, s.Stopped, s.LearnedOnline, s.OverflowBags, s.OverflowWindows,
				sc.Rule(), sc.Threshold(), p.HasSequence(), p.Complete())
			return nil
		},
	})
	c.AddCommand(&cobra.Command{
		Use:   "export FILE",
		Short: "Verify a profile and write it to stdout (to carry it to another host)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			p, err := bags.LoadFile(args[0])
			if err != nil {
				return err
			}
			_, err = p.WriteTo(c.OutOrStdout())
			return err
		},
	})
	var workload string
	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Read a profile from stdin, verify it and install it atomically at FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			p, err := bags.ReadProfile(os.Stdin)
			if err != nil {
				return fmt.Errorf("import: %w", err)
			}
			if workload != "" && p.Workload() != workload {
				return fmt.Errorf("import: profile is for workload %q, not %q", p.Workload(), workload)
			}
			return p.SaveFile(args[0])
		},
	}
	imp.Flags().StringVar(&workload, "workload", "", "refuse a profile of another workload")
	c.AddCommand(imp)
	return c
}
