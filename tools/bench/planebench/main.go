// Command planebench measures the plane on the lab: checkpoint time,
// rollback downtime and live-migration downtime as a client sees them, for
// several container memory sizes, each against a bare CRIU dump and restore
// of the same workload in the same run (the limit).
//
//	go run ./tools/bench/planebench -sizes 1,64,256,1024 -reps 3
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/tools/lab"
	"go.uber.org/zap"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "planebench:", err)
		os.Exit(1)
	}
}

type sample struct {
	ckWall, ckGap                    time.Duration
	rbDown, rbKill, rbRestore, rbGap time.Duration
	migFrozen, migGap                time.Duration
	migSteps                         map[string]time.Duration
	migResets                        int
	bareDump, bareRestore, bareGap   time.Duration
	bareResets                       int
	ckBytes                          int64
}

func run() error {
	sizesF := flag.String("sizes", "1,64,256,1024", "container memory sizes in MiB")
	reps := flag.Int("reps", 3, "repetitions per size")
	labRoot := flag.String("lab", "/var/lib/escape-lab", "lab root")
	criu := flag.String("criu", "/opt/escape/bin/criu", "CRIU binary (the lab's 4.2 wrapper)")
	flag.Parse()
	var sizes []int
	for _, s := range strings.Split(*sizesF, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-sizes: %q is not a positive MiB count", s)
		}
		sizes = append(sizes, n)
	}
	if *reps < 1 {
		return fmt.Errorf("-reps must be at least 1")
	}
	ctx := context.Background()
	// Restored bare processes are orphaned when criu exits: adopt them.
	if err := setSubreaper(); err != nil {
		return err
	}
	inv, err := lab.LoadInventory(ctx, *labRoot)
	if err != nil {
		return err
	}
	work := filepath.Join(inv.Shared, "escape-bench", fmt.Sprintf("plane-%d", os.Getpid()))
	state, err := os.MkdirTemp("", "planebench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	defer os.RemoveAll(work)
	if err := os.MkdirAll(work, 0o700); err != nil {
		return err
	}
	rootfs := filepath.Join(work, "memsrv-rootfs")
	if err := buildRootFS(inv.Images["busybox"].RootFS, rootfs); err != nil {
		return err
	}
	cfg := plane.DefaultConfig()
	cfg.State, cfg.Audit, cfg.SharedDir = filepath.Join(state, "state.db"), filepath.Join(state, "audit.jsonl"), filepath.Join(work, "plane")
	one := 1
	cfg.Defaults = plane.PolicyOverrides{CleanEpochs: &one, Retain: &one}
	log, _ := zap.NewDevelopment(zap.IncreaseLevel(zap.WarnLevel))
	p, err := plane.New(cfg, plane.EnvironmentFromLab(inv), plane.WithLogger(log))
	if err != nil {
		return err
	}
	defer p.Close()
	hosts := []string{}
	for _, h := range inv.Hosts {
		hosts = append(hosts, h.Name)
	}
	results := map[int][]sample{}
	for i, size := range sizes {
		ss, err := benchSize(ctx, p, inv, rootfs, *criu, work, size, *reps, hosts, 200+i)
		if err != nil {
			return fmt.Errorf("%d MiB: %w", size, err)
		}
		results[size] = ss
	}
	report(os.Stdout, sizes, results, *reps)
	return nil
}

func buildRootFS(busybox, dst string) error {
	if out, err := exec.Command("cp", "-a", busybox, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("copy busybox rootfs: %v: %s", err, out)
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dst, "memsrv"), "./tools/bench/planebench/memsrv")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build memsrv: %v: %s", err, out)
	}
	return nil
}

func benchSize(ctx context.Context, p *plane.Plane, inv *lab.Inventory, rootfs, criu, work string, size, reps int, hosts []string, octet int) ([]sample, error) {
	id := fmt.Sprintf("bench-%d", size)
	ip := fmt.Sprintf("198.18.1.%d", octet)
	fmt.Fprintf(os.Stderr, "== %d MiB\n", size)
	c, err := p.Deploy(ctx, plane.ContainerConfig{ID: id, Image: rootfs, Host: hosts[0], IP: ip,
		Args: []string{"/memsrv", "-mem", strconv.Itoa(size), "-listen", ":7000"}})
	if err != nil {
		return nil, err
	}
	defer p.Remove(context.Background(), id)
	pr := newProber(inv.Client.Netns, ip+":7000")
	defer pr.close()
	if err := pr.waitReady(60 * time.Second); err != nil {
		return nil, err
	}
	epoch := uint64(0)
	clean := func() error {
		epoch++
		_, err := p.HandleReport(ctx, plane.Report{Container: id, Epoch: epoch}, "bench")
		return err
	}
	var out []sample
	host := 0
	for r := 0; r < reps; r++ {
		var s sample
		if err := clean(); err != nil {
			return nil, err
		}
		t0 := time.Now()
		ck, err := p.Checkpoint(ctx, id, false, "bench")
		if err != nil {
			return nil, err
		}
		s.ckWall, s.ckBytes = time.Since(t0), ck.Bytes
		if s.ckGap, _, err = pr.gap(t0, time.Now()); err != nil {
			return nil, fmt.Errorf("checkpoint: %w", err)
		}
		t0 = time.Now()
		rb, err := p.Rollback(ctx, id, []string{"bench"}, "bench")
		if err != nil {
			return nil, err
		}
		s.rbDown, s.rbKill, s.rbRestore = time.Duration(rb.Downtime), time.Duration(rb.Kill), time.Duration(rb.Restore)
		if s.rbGap, _, err = pr.gap(t0, time.Now()); err != nil {
			return nil, fmt.Errorf("rollback: %w", err)
		}
		next := hosts[(host+1)%len(hosts)]
		time.Sleep(300 * time.Millisecond)
		t0 = time.Now()
		res, err := p.Migrate(ctx, id, next, []string{"bench"}, "bench")
		if err != nil {
			return nil, err
		}
		host = (host + 1) % len(hosts)
		s.migFrozen = res.Frozen
		s.migSteps = map[string]time.Duration{}
		for _, st := range res.Steps {
			s.migSteps[st.Step.String()] += st.Duration
		}
		if s.migGap, s.migResets, err = pr.gap(t0, time.Now()); err != nil {
			return nil, fmt.Errorf("migration: %w", err)
		}
		fmt.Fprintf(os.Stderr, "  rep %d: checkpoint %v (gap %v), rollback %v (gap %v), migration frozen %v gap %v resets %d\n",
			r+1, s.ckWall.Round(time.Millisecond), s.ckGap.Round(time.Millisecond), s.rbDown.Round(time.Millisecond),
			s.rbGap.Round(time.Millisecond), s.migFrozen.Round(time.Millisecond), s.migGap.Round(time.Millisecond), s.migResets)
		out = append(out, s)
	}
	_ = c
	pr.close()
	// The container leaves before the bare process takes the stage.
	if err := p.Remove(ctx, id); err != nil {
		return nil, err
	}
	// The limit: the same workload as a bare process, dumped and restored
	// by CRIU directly, in the same run.
	if err := bare(ctx, p, inv, rootfs, criu, work, size, octet+20, out); err != nil {
		return nil, fmt.Errorf("bare criu: %w", err)
	}
	return out, nil
}

func bare(ctx context.Context, p *plane.Plane, inv *lab.Inventory, rootfs, criu, work string, size, octet int, out []sample) error {
	host := inv.Hosts[0].Name
	spec := migrate.Spec{ID: fmt.Sprintf("bare-%d", size), RootFS: rootfs, Args: []string{"x"},
		MAC: fmt.Sprintf("02:e5:00:00:0b:%02x", octet%256)}
	spec.IP, _ = parsePrefix(fmt.Sprintf("198.18.1.%d/15", octet))
	rt := p.Runtime()
	if err := rt.PrepareNetwork(host, spec, true); err != nil {
		return err
	}
	defer rt.RemoveNetwork(host, spec.ID)
	ns := "/run/netns/" + migrate.CtNetns(host, spec.ID)
	cmd := exec.Command("nsenter", "--net="+ns, filepath.Join(rootfs, "memsrv"), "-mem", strconv.Itoa(size), "-listen", ":7000")
	cmd.SysProcAttr = setsid()
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	defer func() { killPID(pid) }()
	pr := newProber(inv.Client.Netns, fmt.Sprintf("198.18.1.%d:7000", octet))
	defer pr.close()
	if err := pr.waitReady(60 * time.Second); err != nil {
		return err
	}
	for i := range out {
		dir := filepath.Join(work, fmt.Sprintf("bare-%d-%d", size, i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond)
		t0 := time.Now()
		if b, err := exec.CommandContext(ctx, "nsenter", "--net="+ns, criu, "dump", "-t", strconv.Itoa(pid), "-D", dir,
			"--tcp-established", "-o", "dump.log").CombinedOutput(); err != nil {
			return fmt.Errorf("dump: %v: %s %s", err, b, tailLog(filepath.Join(dir, "dump.log")))
		}
		t1 := time.Now()
		// Reap it (our child, or reparented to us as subreaper after a
		// restore) so its PID is free for the restore.
		if err := reap(pid); err != nil {
			return err
		}
		if b, err := exec.CommandContext(ctx, "nsenter", "--net="+ns, criu, "restore", "-D", dir, "-d",
			"--tcp-established", "-o", "restore.log").CombinedOutput(); err != nil {
			return fmt.Errorf("restore: %v: %s %s", err, b, tailLog(filepath.Join(dir, "restore.log")))
		}
		t2 := time.Now()
		out[i].bareDump, out[i].bareRestore = t1.Sub(t0), t2.Sub(t1)
		var err error
		if out[i].bareGap, out[i].bareResets, err = pr.gap(t0, time.Now()); err != nil {
			return err
		}
		os.RemoveAll(dir)
		fmt.Fprintf(os.Stderr, "  bare rep %d: dump %v restore %v gap %v resets %d\n", i+1, out[i].bareDump.Round(time.Millisecond),
			out[i].bareRestore.Round(time.Millisecond), out[i].bareGap.Round(time.Millisecond), out[i].bareResets)
	}
	return nil
}

func tailLog(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func col(ss []sample, f func(sample) time.Duration) time.Duration {
	var ds []time.Duration
	for _, s := range ss {
		ds = append(ds, f(s))
	}
	return median(ds)
}

func msf(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

func report(w *os.File, sizes []int, res map[int][]sample, reps int) {
	fmt.Fprintf(w, "Medians of %d runs, milliseconds. gap = longest time between two answered requests as the client sees it.\n\n", reps)
	fmt.Fprintln(w, "| MiB | checkpoint | ckpt gap | rollback (plane) | rollback gap | migration frozen | migration gap | bare dump | bare restore | bare gap | migration gap / bare gap | frozen / (bare dump+restore) | resets |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, size := range sizes {
		ss := res[size]
		mg, bg := col(ss, func(s sample) time.Duration { return s.migGap }), col(ss, func(s sample) time.Duration { return s.bareGap })
		fz := col(ss, func(s sample) time.Duration { return s.migFrozen })
		bl := col(ss, func(s sample) time.Duration { return s.bareDump + s.bareRestore })
		resets := 0
		for _, s := range ss {
			resets += s.migResets + s.bareResets
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %.2f | %d |\n", size,
			msf(col(ss, func(s sample) time.Duration { return s.ckWall })), msf(col(ss, func(s sample) time.Duration { return s.ckGap })),
			msf(col(ss, func(s sample) time.Duration { return s.rbDown })), msf(col(ss, func(s sample) time.Duration { return s.rbGap })),
			msf(fz), msf(mg),
			msf(col(ss, func(s sample) time.Duration { return s.bareDump })), msf(col(ss, func(s sample) time.Duration { return s.bareRestore })),
			msf(bg), ratio(mg, bg), ratio(fz, bl), resets)
	}
	fmt.Fprint(w, "\nMigration by step (medians, ms):\n\n")
	steps := []string{"checkpoint", "prepare", "move-address", "restore", "announce", "remove-source"}
	fmt.Fprintln(w, "| MiB | "+strings.Join(steps, " | ")+" | rollback kill | rollback restore | checkpoint bytes |")
	fmt.Fprintln(w, "|---|"+strings.Repeat("---|", len(steps)+3))
	for _, size := range sizes {
		ss := res[size]
		row := []string{strconv.Itoa(size)}
		for _, st := range steps {
			row = append(row, msf(col(ss, func(s sample) time.Duration { return s.migSteps[st] })))
		}
		row = append(row, msf(col(ss, func(s sample) time.Duration { return s.rbKill })), msf(col(ss, func(s sample) time.Duration { return s.rbRestore })))
		row = append(row, strconv.FormatInt(ss[len(ss)-1].ckBytes, 10))
		fmt.Fprintln(w, "| "+strings.Join(row, " | ")+" |")
	}
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
