package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/escape-mtd/escape/model"
	"github.com/escape-mtd/escape/model/figures"
)

func newCompareCmd() *cobra.Command {
	var c common
	var out string
	cmd := &cobra.Command{
		Use:   "compare-policies",
		Short: "Compare static, random, most-heterogeneous and model-guided destinations in simulation",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, err := c.interpretation()
			if err != nil {
				return err
			}
			if out != "" {
				return writePolicies(cmd, out, in, c)
			}
			runs, err := model.ComparePolicies(cmd.Context(), model.DefaultScenarios(), in, append(model.DefaultCompareOptions(), c.simOptions()...)...)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), figures.PolicyTable(runs))
			return nil
		},
	}
	c.register(cmd, 20000)
	cmd.Flags().StringVar(&out, "out", "", "write policies.{png,svg,csv,md} to this directory instead of printing the table")
	return cmd
}
