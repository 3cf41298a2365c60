package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/escape-mtd/escape/bags/syscalls"
)

type opts struct {
	rhids, escape, out, work string
	baseline                 string
	reps, repeat             int
	lenient                  bool
}

func main() {
	var o opts
	flag.StringVar(&o.rhids, "rhids", "", "folder holding the authors' classifier.jar (default: ../shared/tools/rhids, else ../../shared/tools/rhids for a worktree)")
	flag.StringVar(&o.escape, "escape", "bin/escape-sensor", "escape-sensor binary to time")
	flag.StringVar(&o.baseline, "baseline", "", "another escape-sensor binary (e.g. built from an older commit) timed in the same runs")
	flag.StringVar(&o.out, "out", "out/bench-rhids.md", "results file (markdown)")
	flag.StringVar(&o.work, "work", "", "work folder for the trace and profiles (default: a temporary one, removed after)")
	flag.IntVar(&o.reps, "reps", 5, "paired runs (each tool once per run, order alternating)")
	flag.IntVar(&o.repeat, "repeat", 4, "times the recorded trace is concatenated into the timed input")
	flag.BoolVar(&o.lenient, "lenient", false, "pass --lenient to train (skip malformed lines instead of failing)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "rhidsbench:", err)
		os.Exit(1)
	}
}

// workload is what the recorded trace shows: compression, a directory walk
// and many small file reads, across forked processes.
const workload = `tar cf - -C /usr share/doc share/man 2>/dev/null | gzip -1 >/dev/null
ls -lR /usr/share /usr/lib >/dev/null 2>&1
find /usr/share -type f -size -64k 2>/dev/null | head -n 5000 | xargs -r cat >/dev/null 2>&1
true`

// tool is one timed command and its runs.
type tool struct {
	name    string
	argv    []string
	samples []sample
	lastOut string
}

func trainArgv(bin, work, profile, trace string, lenient bool) []string {
	argv := []string{bin, "train", "--format", "strace", "-o", filepath.Join(work, profile), trace}
	if lenient {
		argv = slices.Insert(argv, 2, "--lenient")
	}
	return argv
}

// sample is one timed run of one tool.
type sample struct {
	wall   time.Duration
	rssKiB int64
}

func run(ctx context.Context, o opts) error {
	if o.reps < 1 || o.repeat < 1 {
		return fmt.Errorf("--reps and --repeat must be at least 1")
	}
	if o.rhids == "" {
		o.rhids = "../shared/tools/rhids"
		if _, err := os.Stat(o.rhids); err != nil {
			o.rhids = "../../shared/tools/rhids"
		}
	}
	jar := filepath.Join(o.rhids, "classifier.jar")
	if _, err := os.Stat(jar); err != nil {
		return fmt.Errorf("rhids: %w (see %s/README.md)", err, o.rhids)
	}
	for _, tool := range []string{"java", "strace"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing (java: apt-get install -y default-jre-headless; strace: make deps): %w", tool, err)
		}
	}
	escape, err := filepath.Abs(o.escape)
	if err != nil {
		return err
	}
	if _, err := os.Stat(escape); err != nil {
		return fmt.Errorf("escape-sensor: %w (run make build)", err)
	}
	jar, err = filepath.Abs(jar)
	if err != nil {
		return err
	}
	work := o.work
	if work == "" {
		if work, err = os.MkdirTemp("", "rhidsbench-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	tracePath, lines, size, err := makeTrace(ctx, work, o.repeat)
	if err != nil {
		return err
	}
	if err := writeSyscallIndex(filepath.Join(work, "syscalls")); err != nil {
		return fmt.Errorf("rhids syscall index: %w", err)
	}
	fmt.Fprintf(os.Stderr, "rhidsbench: trace %s: %d lines, %.0f MB\n", tracePath, lines, float64(size)/1e6)

	rhidsCmd := []string{"java", "-jar", jar, "-v", "0", "-e", "1000", "-t", "0.99", "-d", "10", "-i", tracePath}
	tools := []tool{{name: "rhids", argv: rhidsCmd}, {name: "ESCAPE", argv: trainArgv(escape, work, "profile.bosc", tracePath, o.lenient)}}
	if o.baseline != "" {
		base, err := filepath.Abs(o.baseline)
		if err != nil {
			return err
		}
		tools = append(tools, tool{name: "ESCAPE baseline (" + o.baseline + ")", argv: trainArgv(base, work, "baseline.bosc", tracePath, o.lenient)})
	}
	for i := range o.reps {
		for k := range tools {
			t := &tools[(k+i)%len(tools)] // rotate the order from run to run
			s, out, err := timed(ctx, work, t.argv)
			if err != nil {
				return err
			}
			t.samples, t.lastOut = append(t.samples, s), strings.TrimSpace(out)
			fmt.Fprintf(os.Stderr, "rhidsbench: run %d %s: %v, %d KiB\n", i+1, t.name, s.wall.Round(time.Millisecond), s.rssKiB)
		}
	}
	if len(tools) == 3 { // the speed-up must not change what is learned
		a, errA := os.ReadFile(filepath.Join(work, "profile.bosc"))
		b, errB := os.ReadFile(filepath.Join(work, "baseline.bosc"))
		if err := errors.Join(errA, errB); err != nil {
			return err
		}
		if !bytes.Equal(a, b) {
			return fmt.Errorf("ESCAPE and its baseline wrote different profiles:\n%s\n%s", tools[1].lastOut, tools[2].lastOut)
		}
	}
	return report(o, lines, size, tools)
}

// makeTrace records the workload under strace -f and concatenates the
// recording repeat times (the rhids README's input had the same shape). It
// streams: see hiwaterKiB for why this process must stay small.
func makeTrace(ctx context.Context, work string, repeat int) (path string, lines, size int64, err error) {
	one := filepath.Join(work, "one.strace")
	cmd := exec.CommandContext(ctx, "strace", "-f", "-o", one, "sh", "-c", workload)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", 0, 0, fmt.Errorf("record the trace: %w: %s", err, lastLines(string(out)))
	}
	path = filepath.Join(work, "trace.strace")
	out, err := os.Create(path)
	if err != nil {
		return "", 0, 0, err
	}
	defer out.Close()
	for range repeat {
		n, sz, err := appendCounting(out, one)
		if err != nil {
			return "", 0, 0, fmt.Errorf("write the trace: %w", err)
		}
		lines, size = lines+n, size+sz
	}
	if err := out.Close(); err != nil {
		return "", 0, 0, fmt.Errorf("write the trace: %w", err)
	}
	return path, lines, size, nil
}

// appendCounting appends the file at src to w and counts its lines.
func appendCounting(w io.Writer, src string) (lines, size int64, err error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, 0, err
	}
	defer in.Close()
	buf := make([]byte, 256<<10)
	for {
		n, rerr := in.Read(buf)
		if n > 0 {
			lines += int64(bytes.Count(buf[:n], []byte("\n")))
			size += int64(n)
			if _, err := w.Write(buf[:n]); err != nil {
				return 0, 0, err
			}
		}
		if rerr == io.EOF {
			return lines, size, nil
		}
		if rerr != nil {
			return 0, 0, rerr
		}
	}
}

// hiwaterKiB is this process's own peak RSS. It matters because Go starts a
// child with vfork: the kernel folds the parent's peak into the child's
// ru_maxrss at exec, so a child's figure is never below this one.
func hiwaterKiB() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var kib int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kib)
			return kib
		}
	}
	return 0
}

// writeSyscallIndex writes rhids' `syscalls` file: "name<TAB>number" lines
// in ascending number order (it stops at the first number below its size).
func writeSyscallIndex(path string) error {
	var b strings.Builder
	for nr, found := 0, 0; found < syscalls.X86_64.Count(); nr++ {
		if name, ok := syscalls.X86_64.Name(uint16(nr)); ok {
			fmt.Fprintf(&b, "%s\t%d\n", name, nr)
			found++
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// timed runs argv in dir and returns its wall time, its peak RSS and its
// standard output; a failing run is an error, with its output.
func timed(ctx context.Context, dir string, argv []string) (sample, string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return sample{}, "", fmt.Errorf("%s: %w: %s%s", strings.Join(argv, " "), err, lastLines(stdout.String()), lastLines(stderr.String()))
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return sample{}, "", fmt.Errorf("%s: no rusage", argv[0])
	}
	if argv[0] == "java" && strings.Contains(stderr.String(), "Exception") {
		return sample{}, "", fmt.Errorf("rhids failed: %s", lastLines(stderr.String()))
	}
	return sample{wall: wall, rssKiB: ru.Maxrss}, stdout.String(), nil
}

func lastLines(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > 5 {
		l = l[len(l)-5:]
	}
	return strings.Join(l, "\n")
}

func medianOf(xs []sample, key func(sample) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = key(x)
	}
	slices.Sort(v)
	if n := len(v); n%2 == 1 {
		return v[n/2]
	} else {
		return (v[n/2-1] + v[n/2]) / 2
	}
}

func report(o opts, lines, size int64, tools []tool) error {
	wall := func(s sample) float64 { return s.wall.Seconds() }
	rss := func(s sample) float64 { return float64(s.rssKiB) / 1024 }
	var b strings.Builder
	fmt.Fprintf(&b, "# ESCAPE train vs rhids (%s)\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "Trace: `strace -f` of the bench's workload, recorded by this run and repeated %d times: %d lines, %.0f MB. %d runs, each tool once per run, order rotating.\n\n", o.repeat, lines, float64(size)/1e6, o.reps)
	fmt.Fprintf(&b, "| tool | command | median wall | median peak RSS | runs (wall s / RSS MiB) |\n|---|---|---|---|---|\n")
	for _, t := range tools {
		var runs []string
		for _, x := range t.samples {
			runs = append(runs, fmt.Sprintf("%.2f/%.0f", x.wall.Seconds(), float64(x.rssKiB)/1024))
		}
		argv := slices.Clone(t.argv)
		argv[0] = filepath.Base(argv[0])
		fmt.Fprintf(&b, "| %s | `%s` | %.2f s | %.0f MiB | %s |\n", t.name, strings.Join(argv, " "), medianOf(t.samples, wall), medianOf(t.samples, rss), strings.Join(runs, ", "))
	}
	fmt.Fprintf(&b, "\nPeak RSS is wait4's ru_maxrss; this bench's own peak, which is a floor under it (see hiwaterKiB), was %.0f MiB.\n\n", float64(hiwaterKiB())/1024)
	rw, rr := medianOf(tools[0].samples, wall), medianOf(tools[0].samples, rss)
	for _, t := range tools[1:] {
		fmt.Fprintf(&b, "- **%s: %.1fx faster than rhids, %.1fx less memory** (ratios of the medians)\n", t.name, rw/medianOf(t.samples, wall), rr/medianOf(t.samples, rss))
	}
	if len(tools) == 3 {
		fmt.Fprintf(&b, "- ESCAPE against its baseline: %.2fx faster\n", medianOf(tools[2].samples, wall)/medianOf(tools[1].samples, wall))
	}
	fmt.Fprintf(&b, "\nESCAPE's output: `%s`\n", tools[1].lastOut)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(o.out, []byte(b.String()), 0o644); err != nil {
		return err
	}
	_, err := io.WriteString(os.Stdout, b.String())
	return err
}
