// Command escape-sensor is ESCAPE's per-host sensor: the eBPF daemon, its
// live view, the offline BoSC tools, and the preflight doctor.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at link time by the Makefile (-X main.version=...).
var version = "dev"

func main() {
	root := &cobra.Command{
		Use:           "escape-sensor",
		Short:         "ESCAPE's per-host system-call sensor and BoSC detector",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newDoctorCmd())
	addDaemonCommands(root)
	addOfflineCommands(root)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "escape-sensor:", err)
		os.Exit(exitCode(err))
	}
}
