package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/escape-mtd/escape/tools/doctor"
	"github.com/spf13/cobra"
)

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func newDoctorCmd() *cobra.Command {
	var mode, prefix, labRoot string
	var sockets []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that this machine can run ESCAPE, and say how to fix what is missing",
		Long: `doctor checks BTF, bpf() permission, the raw_syscalls tracepoint, cgroup id
resolution, containerd, runc, CRIU against the kernel, iptables, nftables and network
namespaces. It exits 2 when a check that --mode needs fails.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			m, err := doctor.ParseMode(mode)
			if err != nil {
				return err
			}
			opts := []doctor.Option{doctor.WithPrefix(prefix), doctor.WithLabRoot(labRoot)}
			if len(sockets) > 0 {
				opts = append(opts, doctor.WithContainerd(sockets...))
			}
			rep := doctor.Run(c.Context(), m, opts...)
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(struct {
					doctor.Report
					OK bool `json:"ok"`
				}{rep, rep.OK()}); err != nil {
					return err
				}
			} else {
				renderReport(c.OutOrStdout(), rep)
			}
			if b := rep.Blocking(); len(b) > 0 {
				names := make([]string, len(b))
				for i, r := range b {
					names[i] = r.Name
				}
				return &exitError{code: 2, msg: fmt.Sprintf("mode %s cannot run: %s failed", m, strings.Join(names, ", "))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&mode, "mode", "all", "what you want to run: sensor, agent (a host's checkpoint, restore and migration steps), lab or all")
	cmd.Flags().StringVar(&prefix, "prefix", "/opt/escape", "where make deps installed containerd and CRIU")
	cmd.Flags().StringVar(&labRoot, "lab-root", "/var/lib/escape-lab", "lab whose containerd daemons to check when no --containerd is given")
	cmd.Flags().StringSliceVar(&sockets, "containerd", nil, "containerd socket(s) to check")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func renderReport(w io.Writer, rep doctor.Report) {
	color := isTerminal(w)
	for _, r := range rep.Results {
		mark := "PASS"
		if !r.OK {
			mark = "FAIL"
		}
		if color {
			if r.OK {
				mark = "\x1b[32m" + mark + "\x1b[0m"
			} else {
				mark = "\x1b[31m" + mark + "\x1b[0m"
			}
		}
		fmt.Fprintf(w, "%s  %-24s %s\n", mark, r.Name, r.Detail)
		if !r.OK {
			modes := make([]string, len(r.NeededBy))
			for i, m := range r.NeededBy {
				modes[i] = string(m)
			}
			fmt.Fprintf(w, "      %-24s fix: %s (needed by: %s)\n", "", r.Remedy, strings.Join(modes, ", "))
		}
	}
	if rep.OK() {
		fmt.Fprintf(w, "\nready for mode %s\n", rep.Mode)
	} else {
		fmt.Fprintf(w, "\nNOT ready for mode %s: %d blocking check(s)\n", rep.Mode, len(rep.Blocking()))
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
