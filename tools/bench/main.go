package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "loop" {
		os.Exit(loop(os.Args[2]))
	}
	if len(os.Args) == 3 && os.Args[1] == "spawn" {
		os.Exit(spawnLoop(os.Args[2]))
	}
	var o opts
	flag.StringVar(&o.workload, "workload", "syscall", "what the measured child does: syscall (getppid calls) or spawn (fork, exec and wait for /bin/true; cases a-d)")
	flag.BoolVar(&o.quick, "quick", false, "short run (CI): fewer calls and repetitions")
	flag.StringVar(&o.out, "out", "bench-results.md", "results file (markdown; a .json twin is written next to it)")
	flag.IntVar(&o.reps, "reps", 0, "repetitions per case (default 3 quick, 7 full)")
	flag.StringVar(&o.only, "cases", "", "comma-separated subset of cases (a,b,b2,c,d,e,f,g)")
	flag.StringVar(&o.from, "from", "", "re-render the report from a previous run's .json instead of measuring")
	flag.BoolVar(&o.stats, "stats", true, "also measure the programs' kernel run time (bpf_stats), in separate repetitions")
	flag.BoolVar(&o.redis, "redis", true, "also measure redis-benchmark throughput with the sensor off and on")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "bench: unexpected arguments:", flag.Args())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// chunks splits a child's calls; the child reports the median chunk, so a
// chunk preempted by the other workers sharing the machine does not count.
const chunks = 21

// loop is the measured child: n getppid() calls on one locked thread, in
// chunks; it prints the median chunk's mean ns per call.
func loop(arg string) int {
	return chunked("loop", "call", arg, func(per int) error {
		for range per {
			syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
		}
		return nil
	})
}

// chunked runs the count given by arg in chunks on one locked thread: run
// does per units (its own loop, so that no call is added per unit), and the
// median chunk's mean ns per unit is printed. It returns the exit status.
func chunked(what, unit, arg string, run func(per int) error) int {
	n, err := strconv.Atoi(arg)
	if err != nil || n < chunks {
		fmt.Fprintf(os.Stderr, "bench %s: want a %s count >= %d\n", what, unit, chunks)
		return 2
	}
	runtime.LockOSThread()
	per := n / chunks
	res := make([]float64, chunks)
	for c := range res {
		start := time.Now()
		if err := run(per); err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", what, err)
			return 1
		}
		res[c] = float64(time.Since(start).Nanoseconds()) / float64(per)
	}
	fmt.Printf("%.2f\n", median(res))
	return 0
}
