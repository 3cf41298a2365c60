package main

import (
	"fmt"

	"github.com/escape-mtd/escape/bags"
	"github.com/spf13/cobra"
)

func newDetectCmd() *cobra.Command {
	var tf traceFlags
	var profile string
	var threshold int64
	var online, epochs bool
	c := &cobra.Command{
		Use:   "detect --profile FILE [flags] TRACE|DIR...",
		Short: "Score traces against a BoSC profile, epoch by epoch",
		Long: `detect replays each trace (its own stream) through W-windows and epochs of
the profile's length and reports, per file, the epochs whose mismatches exceed
T. With --online, below-threshold epochs teach the profile their new bags
(the reference implementation's behaviour); the profile file is not rewritten.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			log := offlineLogger(tf.verbose)
			defer log.Sync()
			opts := []bags.Option{bags.WithLogger(log), bags.WithOnlineLearning(online)}
			if threshold >= 0 {
				opts = append(opts, bags.WithThreshold(uint64(threshold)))
			}
			p, err := bags.LoadFile(profile, opts...)
			if err != nil {
				return err
			}
			x, err := bags.NewWindower(p.Window(), p.EpochLen())
			if err != nil {
				return err
			}
			files, err := expand(args)
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			flagged := 0
			for _, f := range files {
				r, cl, err := openTrace(f, &tf)
				if err != nil {
					return fmt.Errorf("detect: %w", err)
				}
				if a := r.Meta().Arch.String(); a != p.Arch() {
					cl.Close()
					return fmt.Errorf("detect: %s is %s, profile %s is %s", f, a, profile, p.Arch())
				}
				var n, anomalous int
				var windows, mism, worst uint64
				err = feed(c.Context(), r, x, tf.timing, func(e bags.Epoch) error {
					v := p.Detect(e)
					n++
					windows += v.Windows
					mism += v.Mismatches
					worst = max(worst, v.Mismatches)
					if v.Anomalous {
						anomalous++
					}
					if epochs {
						fmt.Fprintf(out, "%s epoch %d: windows %d mismatches %d new-bags %d anomalous %v learned %d\n",
							f, n, v.Windows, v.Mismatches, v.NewBags, v.Anomalous, v.Learned)
					}
					return nil
				})
				cl.Close()
				if err != nil {
					return fmt.Errorf("detect %s: %w", f, err)
				}
				verdict := "normal"
				if anomalous > 0 {
					verdict = "ANOMALOUS"
					flagged++
				}
				fmt.Fprintf(out, "%s: %s (%d/%d epochs over T=%d; %d/%d windows unseen; worst epoch %d)\n",
					f, verdict, anomalous, n, p.Threshold(), mism, windows, worst)
			}
			fmt.Fprintf(out, "%d of %d traces anomalous\n", flagged, len(files))
			return nil
		},
	}
	tf.add(c)
	c.Flags().StringVarP(&profile, "profile", "p", "profile.bosc", "profile file")
	c.Flags().Int64VarP(&threshold, "threshold", "t", -1, "override the profile's threshold T")
	c.Flags().BoolVar(&online, "online", false, "online learning of below-threshold epochs")
	c.Flags().BoolVar(&epochs, "epochs", false, "print every epoch's verdict")
	return c
}
