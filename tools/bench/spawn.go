package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The spawn workload measures what the sensor adds to process creation,
// which the getppid loop never exercises: the fork hook runs for every
// fork and thread creation on the host, watched or not, and in a watched
// cgroup it gives every new task a mark (a task-storage allocation) that
// its exit frees. A spawn is a fork, an exec of /bin/true and a wait: the
// unit a shell script or a process-per-request server repeats.

// spawns is the number of spawns per repetition of the full run.
const spawns = 2_100

// spawnLoop is the measured child of the spawn workload: n spawns of
// /bin/true, in chunks; it prints the median chunk's mean ns per spawn.
func spawnLoop(arg string) int {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench spawn:", err)
		return 1
	}
	attr := &syscall.ProcAttr{Files: []uintptr{null.Fd(), null.Fd(), null.Fd()}}
	return chunked("spawn", "spawn", arg, func(per int) error {
		for range per {
			pid, err := syscall.ForkExec("/bin/true", []string{"true"}, attr)
			if err != nil {
				return fmt.Errorf("fork/exec /bin/true: %w", err)
			}
			var ws syscall.WaitStatus
			if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
				return fmt.Errorf("wait: %v, status %d", err, ws.ExitStatus())
			}
		}
		return nil
	})
}

// reportSpawn writes the spawn workload's report: the wall clock and the
// machine's CPU per spawn, and each program's kernel statistics per spawn.
func reportSpawn(o opts, res []result, reps int, took time.Duration) error {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	var sb strings.Builder
	fmt.Fprintf(&sb, "# Sensor overhead on process creation (%s)\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&sb, "Kernel %s, %d CPUs, %d repetitions per case, interleaved, %v total. Each spawn: fork, exec /bin/true, wait; in its own cgroup, watched in case c.\n\n",
		unix.ByteSliceToString(uts.Release[:]), runtime.NumCPU(), reps, took.Round(time.Second))
	fmt.Fprintf(&sb, "| case | setup | spawns/rep | median µs/spawn | added µs (median) | added µs (paired) | min µs/spawn | samples (µs) |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range res {
		fmt.Fprintf(&sb, "| %s | %s | %d | %.1f | %+.2f | %+.2f | %.1f | %s |\n", r.Case, r.Label, r.Calls, r.Median/1e3,
			r.Added/1e3, r.Paired/1e3, r.Min/1e3, joinScaled(r.Samples, 1e3, "%.0f"))
	}
	fmt.Fprintf(&sb, "\nWhole-machine CPU per spawn (all CPUs' busy time over the repetition, /proc/stat):\n\n")
	fmt.Fprintf(&sb, "| case | cpu µs/spawn | added | samples |\n|---|---|---|---|\n")
	for _, r := range res {
		fmt.Fprintf(&sb, "| %s | %.1f | %+.2f | %s |\n", r.Case, median(r.CPU)/1e3, r.CPUAdded/1e3, joinScaled(r.CPU, 1e3, "%.0f"))
	}
	if o.stats {
		writeSpawnStats(&sb, res)
	}
	for _, r := range res {
		if len(r.Learned) > 0 {
			fmt.Fprintf(&sb, "\nCase %s: distinct bags the collector learned per repetition of %d spawns (one window per container stream, so the spawning parent's runtime threads interleave with each child): median %.0f (%s).\n",
				r.Case, r.Calls, median(r.Learned), joinScaled(r.Learned, 1, "%.0f"))
		}
	}
	if err := os.WriteFile(o.out, []byte(sb.String()), 0o644); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(map[string]any{"workload": "spawn", "results": res, "reps": reps, "quick": o.quick}, "", "  ")
	if err := os.WriteFile(strings.TrimSuffix(o.out, ".md")+".json", js, 0o644); err != nil {
		return err
	}
	fmt.Print(sb.String())
	return nil
}

func joinScaled(v []float64, div float64, format string) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf(format, x/div)
	}
	return strings.Join(s, " ")
}

// writeSpawnStats adds every program's kernel statistics per spawn.
func writeSpawnStats(sb *strings.Builder, res []result) {
	fmt.Fprintf(sb, "\nKernel statistics (kernel.bpf_stats_enabled, separate repetitions), medians over repetitions. Runs per spawn count every process's runs during the repetition, not only the spawn loop's; ns per spawn is ns/run × runs/spawn. The statistics add two clock reads to each run, so ns/run overstates a short program by roughly the empty program's figure.\n\n")
	fmt.Fprintf(sb, "| case | program | ns/run | runs/spawn | ns/spawn |\n|---|---|---|---|---|\n")
	for _, r := range res {
		names := make([]string, 0, len(r.Progs))
		for name := range r.Progs {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			var ns, runs, per []float64
			for _, ps := range r.Progs[name] {
				ns, runs, per = append(ns, ps.NsPerRun), append(runs, ps.RunsPerUnit), append(per, ps.NsPerRun*ps.RunsPerUnit)
			}
			fmt.Fprintf(sb, "| %s | %s | %.1f | %.2f | %.0f |\n", r.Case, name, median(ns), median(runs), median(per))
		}
	}
}
