package main

import "github.com/spf13/cobra"

// addDaemonCommands registers run, top and record (owned by the sensor work).
func addDaemonCommands(root *cobra.Command) {
	root.AddCommand(newRunCmd(), newTopCmd(), newRecordCmd(), newRetrainCmd())
}
