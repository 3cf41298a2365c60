package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

type result struct {
	Case    string    `json:"case"`
	Label   string    `json:"label"`
	Calls   int       `json:"calls_per_rep"`
	Samples []float64 `json:"ns_per_call"`
	Median  float64   `json:"median_ns"`
	Added   float64   `json:"added_ns"`  // median - median(a)
	Paired  float64   `json:"paired_ns"` // median over repetitions of (case - a) in the same repetition
	Min     float64   `json:"min_ns"`
	// Whole-machine busy CPU time per call over each repetition (all CPUs,
	// /proc/stat), and its median minus case a's.
	CPU      []float64 `json:"cpu_ns_per_call,omitempty"`
	CPUAdded float64   `json:"cpu_added_ns,omitempty"`
	// Kernel statistics pass (kernel.bpf_stats_enabled): the attached
	// program's run time per run, median over repetitions, and the share of
	// its runs that were the loop's (other processes' calls run it too).
	StatsNs    []float64 `json:"bpf_ns_per_run,omitempty"`
	StatsShare []float64 `json:"bpf_loop_share,omitempty"`
	// Every loaded program's kernel statistics per repetition, by name.
	Progs map[string][]progSample `json:"programs,omitempty"`
	// Case c: distinct bags the collector learned, per repetition.
	Learned []float64 `json:"bags_learned,omitempty"`
}

// finish fills the derived statistics against case a.
func finish(res []result) {
	var a result
	for i := range res {
		res[i].Median, res[i].Min = median(res[i].Samples), slices.Min(res[i].Samples)
		if res[i].Case == "a" {
			a = res[i]
		}
	}
	for i := range res {
		r := &res[i]
		if len(r.CPU) > 0 && len(a.CPU) > 0 {
			r.CPUAdded = median(r.CPU) - median(a.CPU)
		}
		r.Added = r.Median - a.Median
		var d []float64
		for j := range min(len(r.Samples), len(a.Samples)) {
			d = append(d, r.Samples[j]-a.Samples[j])
		}
		r.Paired = median(d)
	}
}

func run(ctx context.Context, o opts) error {
	if o.from != "" {
		return rerender(o)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (BPF programs, cgroups)")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	e := &env{self: self, calls: 2_000_000, slowCalls: 100_000}
	reps := 7
	if o.quick {
		e.calls, e.slowCalls, reps = 300_000, 20_000, 3
	}
	if o.reps > 0 {
		reps = o.reps
	}
	switch o.workload {
	case "", "syscall":
	case "spawn":
		e.spawn, e.calls, o.redis = true, spawns, false
		if o.quick {
			e.calls = spawns / 5
		}
		if o.only == "" {
			o.only = "a,b,c,d"
		}
		for _, c := range strings.Split(o.only, ",") {
			if !slices.Contains([]string{"a", "b", "c", "d"}, c) {
				return fmt.Errorf("the spawn workload runs cases a, b, c and d, not %q", c)
			}
		}
	default:
		return fmt.Errorf("unknown workload %q (want syscall or spawn)", o.workload)
	}
	// Classic tracepoints and bpftrace need tracefs; some hosts do not
	// mount it by default.
	if _, err := os.Stat("/sys/kernel/tracing/events"); err != nil {
		if err := unix.Mount("nodev", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
			return fmt.Errorf("mount tracefs: %w", err)
		}
		fmt.Fprintln(os.Stderr, "bench: mounted tracefs at /sys/kernel/tracing")
	}
	cleanup, err := mkCgroups(e)
	if err != nil {
		return err
	}
	defer cleanup()
	var defs []caseDef
	for _, c := range cases() {
		if o.only == "" || slices.Contains(strings.Split(o.only, ","), c.name) {
			defs = append(defs, c)
		}
	}
	samples := make(map[string][]float64)
	var learned []float64 // case c: distinct bags per repetition
	cpu := make(map[string][]float64)
	start := time.Now()
	// Interleave: every repetition runs every case, so drift in the shared
	// machine's load hits all cases alike.
	for rep := 0; rep < reps; rep++ {
		for _, c := range defs {
			s, err := runCase(ctx, e, c)
			if err != nil {
				return fmt.Errorf("case %s: %w", c.name, err)
			}
			samples[c.name] = append(samples[c.name], s.wall)
			if c.name == "c" {
				learned = append(learned, float64(e.learned))
			}
			cpu[c.name] = append(cpu[c.name], s.cpu)
			fmt.Fprintf(os.Stderr, "rep %d case %-2s %8.1f ns/call, machine cpu %8.1f ns/call\n", rep+1, c.name, s.wall, s.cpu)
		}
	}
	// Second measurement: the kernel's own statistics of the attached
	// program, in separate repetitions (they add two clock reads per run,
	// which would distort the wall-clock figures above).
	stats := map[string][2][]float64{}
	progStats := map[string]map[string][]progSample{} // case -> program -> repetitions
	if o.stats {
		sc, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
		if err != nil {
			return fmt.Errorf("enable bpf stats: %w", err)
		}
		for rep := 0; rep < reps; rep++ {
			for _, c := range defs {
				if c.slow || c.name == "a" {
					continue
				}
				ss, err := statsCase(ctx, e, c)
				if err != nil {
					sc.Close()
					return fmt.Errorf("case %s (stats): %w", c.name, err)
				}
				v := stats[c.name]
				stats[c.name] = [2][]float64{append(v[0], ss.ns), append(v[1], ss.share)}
				for name, ps := range ss.progs {
					if progStats[c.name] == nil {
						progStats[c.name] = map[string][]progSample{}
					}
					progStats[c.name][name] = append(progStats[c.name][name], ps)
				}
				fmt.Fprintf(os.Stderr, "rep %d case %-2s %8.1f ns/run (bpf_stats, loop share %.2f)\n", rep+1, c.name, ss.ns, ss.share)
			}
		}
		sc.Close()
	}
	// A real workload: redis throughput with the sensor off and on,
	// interleaved as well.
	redis := map[string][]float64{}
	if o.redis {
		n := 200_000
		if o.quick {
			n = 50_000
		}
		for rep := 0; rep < reps; rep++ {
			for _, on := range []bool{false, true} {
				r, err := redisThroughput(ctx, e, n, on)
				if err != nil {
					return fmt.Errorf("redis: %w", err)
				}
				for k, v := range r {
					key := k + " off"
					if on {
						key = k + " sensor"
					}
					redis[key] = append(redis[key], v)
				}
				fmt.Fprintf(os.Stderr, "rep %d redis sensor=%v %v\n", rep+1, on, r)
			}
		}
	}
	var res []result
	for _, c := range defs {
		r := result{Case: c.name, Label: c.label, Calls: e.calls, Samples: samples[c.name], CPU: cpu[c.name],
			StatsNs: stats[c.name][0], StatsShare: stats[c.name][1], Progs: progStats[c.name]}
		if c.slow {
			r.Calls = e.slowCalls
		}
		if c.name == "c" {
			r.Learned = learned
		}
		res = append(res, r)
	}
	finish(res)
	if e.spawn {
		return reportSpawn(o, res, reps, time.Since(start))
	}
	return report(o, res, redis, reps, time.Since(start))
}

func runCase(ctx context.Context, e *env, c caseDef) (sample, error) {
	if c.name == "g" {
		return measure(ctx, e, e.w, e.slowCalls, true)
	}
	teardown, err := c.setup(ctx, e)
	if err != nil {
		return sample{}, err
	}
	dir, calls := e.w, e.calls
	if c.slow {
		calls = e.slowCalls
	}
	s, err := measure(ctx, e, dir, calls, false)
	if terr := teardown(); err == nil {
		err = terr
	}
	return s, err
}

// progSample is one program's kernel statistics over one repetition.
type progSample struct {
	NsPerRun    float64 `json:"ns_per_run"`
	RunsPerUnit float64 `json:"runs_per_unit"` // runs per loop call or spawn, all processes' runs included
}

// statsSample is one repetition's kernel statistics: the sys_enter
// program's ns per run and the loop's share of its runs, and every loaded
// program's figures by name.
type statsSample struct {
	ns, share float64
	progs     map[string]progSample
}

// statsCase runs one repetition of c with kernel statistics on.
func statsCase(ctx context.Context, e *env, c caseDef) (statsSample, error) {
	e.attached, e.progs = nil, nil
	teardown, err := c.setup(ctx, e)
	if err != nil {
		return statsSample{}, err
	}
	type snap struct {
		t time.Duration
		n uint64
	}
	before := map[string]snap{}
	for name, p := range e.progs {
		if st, err := p.Stats(); err == nil {
			before[name] = snap{st.Runtime, st.RunCount}
		}
	}
	_, err = measure(ctx, e, e.w, e.calls, false)
	out := statsSample{progs: map[string]progSample{}}
	for name, p := range e.progs {
		if err != nil {
			break
		}
		st, serr := p.Stats()
		if serr != nil {
			err = fmt.Errorf("bpf stats of %s: %w", name, serr)
			break
		}
		b := before[name]
		ps := progSample{RunsPerUnit: float64(st.RunCount-b.n) / float64(e.calls)}
		if n := st.RunCount - b.n; n > 0 {
			ps.NsPerRun = float64(st.Runtime-b.t) / float64(n)
		}
		out.progs[name] = ps
		if p == e.attached && ps.RunsPerUnit > 0 {
			out.ns, out.share = ps.NsPerRun, min(1, 1/ps.RunsPerUnit)
		}
	}
	if terr := teardown(); err == nil {
		err = terr
	}
	return out, err
}

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func report(o opts, res []result, redis map[string][]float64, reps int, took time.Duration) error {
	by := map[string]result{}
	for _, r := range res {
		by[r.Case] = r
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	var sb strings.Builder
	mode := "full"
	if o.quick {
		mode = "quick"
	}
	fmt.Fprintf(&sb, "# Sensor overhead (%s run, %s)\n\n", mode, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&sb, "Kernel %s, %d CPUs, %d repetitions per case, interleaved, %v total. getppid() loop in its own cgroup.\n\n",
		unix.ByteSliceToString(uts.Release[:]), runtime.NumCPU(), reps, took.Round(time.Second))
	fmt.Fprintf(&sb, "Each sample is one child's median chunk (ns/call). Added cost: median(case) - median(a); paired: median over repetitions of case - a of the same repetition; min: the least-disturbed repetition.\n\n")
	fmt.Fprintf(&sb, "| case | setup | calls/rep | median ns/call | added (median) | added (paired) | min ns/call | samples |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range res {
		ss := make([]string, len(r.Samples))
		for i, s := range r.Samples {
			ss[i] = fmt.Sprintf("%.0f", s)
		}
		fmt.Fprintf(&sb, "| %s | %s | %d | %.1f | %.1f | %.1f | %.1f | %s |\n", r.Case, r.Label, r.Calls, r.Median, r.Added,
			r.Paired, r.Min, strings.Join(ss, " "))
	}
	if _, ok := by["b"]; ok && len(by["b"].StatsNs) > 0 {
		fmt.Fprintf(&sb, "\nKernel statistics (kernel.bpf_stats_enabled, separate repetitions): the attached program's run time per run, median; the empty program's figure is mostly the statistics' own two clock reads. Loop share: the loop's calls among the program's runs (other processes run it too, unwatched).\n\n")
		fmt.Fprintf(&sb, "| case | ns/run (median) | above the empty program | loop share | samples |\n|---|---|---|---|---|\n")
		base := median(by["b"].StatsNs)
		for _, r := range res {
			if len(r.StatsNs) == 0 {
				continue
			}
			ss := make([]string, len(r.StatsNs))
			for i, v := range r.StatsNs {
				ss[i] = fmt.Sprintf("%.0f", v)
			}
			fmt.Fprintf(&sb, "| %s | %.1f | %.1f | %.2f | %s |\n", r.Case, median(r.StatsNs), median(r.StatsNs)-base,
				median(r.StatsShare), strings.Join(ss, " "))
		}
	}
	ratio := func(x, y string, pick func(result) float64) (float64, bool) {
		a, ok1 := by[x]
		b, ok2 := by[y]
		if !ok1 || !ok2 || pick(b) <= 0 {
			return 0, false
		}
		return pick(a) / pick(b), true
	}
	mina := by["a"].Min
	fmt.Fprintf(&sb, "\n| ratio of added cost | medians | paired | minima | target |\n|---|---|---|---|---|\n")
	for _, q := range ratioRows() {
		v1, ok1 := ratio(q.x, q.y, func(r result) float64 { return r.Added })
		v2, ok2 := ratio(q.x, q.y, func(r result) float64 { return r.Paired })
		v3, ok3 := ratio(q.x, q.y, func(r result) float64 { return r.Min - mina })
		if ok1 || ok2 || ok3 {
			fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s |\n", q.what, fmtRatio(v1, ok1), fmtRatio(v2, ok2), fmtRatio(v3, ok3), q.target)
		}
	}
	if len(by["a"].CPU) > 0 {
		fmt.Fprintf(&sb, "\nWhole-machine CPU: busy time of every CPU (/proc/stat: user, nice, system, irq, softirq) over each repetition, per loop call, median. It charges a case with all it causes on any CPU, including the userspace reader that drains the ring buffer and the wake-ups, which the caller's wall clock misses when they run on the other CPU. Other jobs on the machine add noise to every case alike.\n\n")
		fmt.Fprintf(&sb, "| case | cpu ns/call | added | samples |\n|---|---|---|---|\n")
		for _, r := range res {
			ss := make([]string, len(r.CPU))
			for i, v := range r.CPU {
				ss[i] = fmt.Sprintf("%.0f", v)
			}
			fmt.Fprintf(&sb, "| %s | %.1f | %.1f | %s |\n", r.Case, median(r.CPU), r.CPUAdded, strings.Join(ss, " "))
		}
		fmt.Fprintf(&sb, "\n| ratio of added machine CPU | ratio | target |\n|---|---|---|\n")
		for _, q := range ratioRows() {
			if v, ok := ratio(q.x, q.y, func(r result) float64 { return r.CPUAdded }); ok {
				fmt.Fprintf(&sb, "| %s | %.2f | %s |\n", q.what, v, q.target)
			}
		}
	}
	if c, ok := by["c"]; ok && len(c.Learned) > 0 {
		fmt.Fprintf(&sb, "\nCase c: distinct bags the collector learned per repetition of %d calls: median %.0f.\n", c.Calls, median(c.Learned))
	}
	if len(redis) > 0 {
		fmt.Fprintf(&sb, "\n| redis-benchmark (lab redis image, watched cgroup) | off req/s | sensor req/s | change |\n|---|---|---|---|\n")
		for _, op := range []string{"SET", "GET"} {
			off, on := median(redis[op+" off"]), median(redis[op+" sensor"])
			if off > 0 {
				fmt.Fprintf(&sb, "| %s | %.0f | %.0f | %+.1f%% |\n", op, off, on, 100*(on-off)/off)
			}
		}
	}
	if err := os.WriteFile(o.out, []byte(sb.String()), 0o644); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(map[string]any{"results": res, "redis": redis, "reps": reps, "quick": o.quick}, "", "  ")
	if err := os.WriteFile(strings.TrimSuffix(o.out, ".md")+".json", js, 0o644); err != nil {
		return err
	}
	fmt.Print(sb.String())
	return nil
}

// ratioRows are the comparisons the report makes, case x's added cost over
// case y's, with the target where it sets one.
func ratioRows() []struct{ x, y, what, target string } {
	return []struct{ x, y, what, target string }{
		{"c", "b", "sensor watched / floor", "<= 1.25"},
		{"d", "b", "sensor unwatched / floor", "~ 1"},
		{"b2", "b", "classic tracepoint / tp_btf (empty)", "hook choice"},
		{"e", "c", "per-event streaming / sensor", ">= 20"},
		{"f", "c", "bpftrace / sensor", ""},
		{"g", "c", "strace / sensor", ""},
	}
}

func fmtRatio(v float64, ok bool) string {
	if !ok {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", v)
}

// rerender rebuilds the report from a previous run's JSON (no measuring).
func rerender(o opts) error {
	b, err := os.ReadFile(o.from)
	if err != nil {
		return err
	}
	var saved struct {
		Workload string               `json:"workload"`
		Results  []result             `json:"results"`
		Redis    map[string][]float64 `json:"redis"`
		Reps     int                  `json:"reps"`
		Quick    bool                 `json:"quick"`
	}
	if err := json.Unmarshal(b, &saved); err != nil {
		return fmt.Errorf("%s: %w", o.from, err)
	}
	if len(saved.Results) == 0 {
		return fmt.Errorf("%s: no results", o.from)
	}
	finish(saved.Results)
	o.quick = saved.Quick
	if saved.Workload == "spawn" {
		o.stats = slices.ContainsFunc(saved.Results, func(r result) bool { return len(r.Progs) > 0 })
		return reportSpawn(o, saved.Results, saved.Reps, 0)
	}
	return report(o, saved.Results, saved.Redis, saved.Reps, 0)
}
