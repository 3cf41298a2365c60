package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/escape-mtd/escape/migrate"
)

func numCPU() int { return runtime.NumCPU() }

// stepOrder lists the migration steps in the order they first ran.
var stepOrder []string

func noteSteps(steps []string) {
	for _, s := range steps {
		if !slices.Contains(stepOrder, s) {
			stepOrder = append(stepOrder, s)
		}
	}
}

// colMig is col over the migrations in mode m that did not fail.
func colMig(ss []sample, m string, f func(migSample) time.Duration) time.Duration {
	var ds []time.Duration
	for _, s := range ss {
		if ms, ok := s.mig[m]; ok && ms.failed == "" {
			ds = append(ds, f(ms))
		}
	}
	return median(ds)
}

func failures(ss []sample, m string) int {
	n := 0
	for _, s := range ss {
		if s.mig[m].failed != "" {
			n++
		}
	}
	return n
}

func report(w io.Writer, sizes []int, modes []string, res map[int][]sample, reps int, withBare bool) {
	fmt.Fprintf(w, "Medians of %d runs, milliseconds. gap = longest time between two answered requests as the client (a prober in the client namespace, one request every 2 ms) sees it; frozen = the plane's own figure (from the dump's start until the restored copy answers).\n\n", reps)
	fmt.Fprintln(w, "| MiB | mode | checkpoint | ckpt gap | rollback (plane) | rollback gap | migration frozen | migration gap | gap / bare gap | resets | failed |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, size := range sizes {
		ss := res[size]
		bg := col(ss, func(s sample) time.Duration { return s.bare.gap })
		for _, m := range modes {
			resets := 0
			for _, s := range ss {
				resets += s.mig[m].resets
			}
			mg := colMig(ss, m, func(s migSample) time.Duration { return s.gap })
			lim := "-"
			if withBare {
				lim = fmt.Sprintf("%.2f", ratio(mg, bg))
			}
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %d | %d |\n", size, m,
				msf(col(ss, func(s sample) time.Duration { return s.ck[m].ckWall })), msf(col(ss, func(s sample) time.Duration { return s.ck[m].ckGap })),
				msf(col(ss, func(s sample) time.Duration { return s.ck[m].rbDown })), msf(col(ss, func(s sample) time.Duration { return s.ck[m].rbGap })),
				msf(colMig(ss, m, func(s migSample) time.Duration { return s.frozen })), msf(mg), lim, resets, failures(ss, m))
		}
	}
	fmt.Fprint(w, "\nMigration by step (medians, ms). criu frozen = CRIU's own frozen time in the dump, criu restore = its restore time (stats-dump, stats-restore); "+
		"transfer = the dump's copy agent to agent (none with shared storage): MiB of image, MiB on the wire, MB/s of image over the transfer's own time.\n\n")
	fmt.Fprintln(w, "| MiB | mode | "+strings.Join(stepOrder, " | ")+" | criu frozen | criu restore | frozen - criu | transfer MiB | wire MiB | transfer MB/s |")
	fmt.Fprintln(w, "|---|---|"+strings.Repeat("---|", len(stepOrder)+6))
	for _, size := range sizes {
		ss := res[size]
		for _, m := range modes {
			row := []string{strconv.Itoa(size), m}
			for _, st := range stepOrder {
				row = append(row, msf(colMig(ss, m, func(s migSample) time.Duration { return s.steps[st] })))
			}
			cf := colMig(ss, m, func(s migSample) time.Duration { return s.criu.Frozen })
			cr := colMig(ss, m, func(s migSample) time.Duration { return s.criu.Restore })
			over := colMig(ss, m, func(s migSample) time.Duration { return s.frozen - s.criu.Frozen - s.criu.Restore })
			row = append(row, msf(cf), msf(cr), msf(over))
			var last migrate.TransferResult
			for _, s := range ss {
				if s.mig[m].transfer.Bytes > 0 {
					last = s.mig[m].transfer
				}
			}
			if last.Bytes == 0 {
				row = append(row, "-", "-", "-")
			} else {
				took := colMig(ss, m, func(s migSample) time.Duration { return s.transfer.Took })
				row = append(row, fmt.Sprintf("%.1f", float64(last.Bytes)/(1<<20)), fmt.Sprintf("%.1f", float64(last.Wire)/(1<<20)),
					fmt.Sprintf("%.0f", float64(last.Bytes)/1e6/took.Seconds()))
			}
			fmt.Fprintln(w, "| "+strings.Join(row, " | ")+" |")
		}
	}
	if withBare {
		fmt.Fprint(w, "\nThe limit: memsrv as a bare process in host h1's namespaces, dumped and restored by the host's CRIU directly (no containerd, runc, agent or plane), medians, ms.\n\n")
		fmt.Fprintln(w, "| MiB | bare dump | bare restore | bare gap | criu frozen | criu restore | resets |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
		for _, size := range sizes {
			ss := res[size]
			resets := 0
			for _, s := range ss {
				resets += s.bare.resets
			}
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %d |\n", size,
				msf(col(ss, func(s sample) time.Duration { return s.bare.dump })), msf(col(ss, func(s sample) time.Duration { return s.bare.restore })),
				msf(col(ss, func(s sample) time.Duration { return s.bare.gap })), msf(col(ss, func(s sample) time.Duration { return s.bare.criu.Frozen })),
				msf(col(ss, func(s sample) time.Duration { return s.bare.criu.Restore })), resets)
		}
	}
	fmt.Fprint(w, "\nRollback (medians, ms):\n\n| MiB | mode | kill | restore | checkpoint bytes |\n|---|---|---|---|---|\n")
	for _, size := range sizes {
		ss := res[size]
		for _, m := range modes {
			fmt.Fprintf(w, "| %d | %s | %s | %s | %d |\n", size, m, msf(col(ss, func(s sample) time.Duration { return s.ck[m].rbKill })),
				msf(col(ss, func(s sample) time.Duration { return s.ck[m].rbRestore })), ss[len(ss)-1].ck[m].bytes)
		}
	}
}
