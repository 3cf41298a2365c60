// Command planebench measures the plane on the lab: checkpoint time,
// rollback downtime and live-migration downtime as a client sees them, for
// several container memory sizes, each against a bare CRIU dump and restore
// of the same workload in the same run (the limit).
//
//	go run ./tools/bench/planebench -sizes 1,64,256,1024 -reps 3
//
// -modes compares migration paths in the same run, each rep migrating once
// per mode: "staged" is the plane's own path (destination staged before
// the freeze, dump requested directly); "direct" dumps directly but creates
// the destination after the dump; "legacy" is the original path (client
// Task.Checkpoint, which pauses first, and the destination created after
// the dump); "full" and "lazy" are the staged path with lazy restore never
// and always, whatever the container's memory.
//
// Each size also measures two runc floors: the container with the plane's
// own OCI spec, and the same without its /dev and /dev/shm tmpfs mounts,
// checkpointed and restored by runc alone (runc.go). The design runs
// containers through containerd and runc, so no migration can be faster
// than the floor; it tells what CRIU inside a runc container costs over
// the bare limit, apart from what containerd and ESCAPE add.
//
// -lazy-restore-from sets the plane's lazy_restore_from, for its rollbacks
// and its own ("staged") migrations alike.
//
// -network-lock sets CRIU's network lock for the plane's containers and the
// bare limit alike.
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
	mig                              map[string]migSample
	bareDump, bareRestore, bareGap   time.Duration
	bareCRIU                         migrate.CRIUStats
	bareResets                       int
	floors                           map[string]floorSample
	ckBytes                          int64
}

// migSample is one migration in one mode.
type migSample struct {
	frozen, gap time.Duration
	steps       map[string]time.Duration
	criu        migrate.CRIUStats
	resets      int
}

// modeOptions are the migrator options of each mode besides "staged",
// which is the plane's own migrator.
var modeOptions = map[string][]migrate.Option{
	"direct": {migrate.WithStaging(false)},
	"legacy": {migrate.WithStaging(false), migrate.WithPausedDump(true)},
	"full":   {migrate.WithLazyRestore(false)},
	"lazy":   {migrate.WithLazyFrom(0)},
}

func run() error {
	sizesF := flag.String("sizes", "1,64,256,1024", "container memory sizes in MiB")
	reps := flag.Int("reps", 3, "repetitions per size")
	labRoot := flag.String("lab", "/var/lib/escape-lab", "lab root")
	criu := flag.String("criu", "/opt/escape/bin/criu", "CRIU binary (the lab's 4.2 wrapper)")
	lock := flag.String("network-lock", "nftables", "CRIU network lock (nftables or iptables), for the plane's containers and the bare limit alike")
	lazyFrom := flag.String("lazy-restore-from", "", "the plane's lazy_restore_from (a size, always or never; default the plane's)")
	modesF := flag.String("modes", "legacy,direct,staged", "migration paths to compare (legacy, direct, full, lazy, staged; staged is the plane's own: lazy from migrate.DefaultLazyFrom; lazy: at any size; full: never)")
	flag.Parse()
	var modes []string
	for _, m := range strings.Split(*modesF, ",") {
		m = strings.TrimSpace(m)
		if _, ok := modeOptions[m]; !ok && m != "staged" {
			return fmt.Errorf("-modes: unknown mode %q", m)
		}
		modes = append(modes, m)
	}
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
	migrationRoot = filepath.Join(work, "migrations")
	one := 1
	cfg.Defaults = plane.PolicyOverrides{CleanEpochs: &one, Retain: &one}
	cfg.NetworkLock = *lock
	if *lazyFrom != "" {
		cfg.LazyRestoreFrom = *lazyFrom
		if err := cfg.Validate(); err != nil {
			return err
		}
	}
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
		ss, err := benchSize(ctx, p, inv, rootfs, *criu, *lock, work, size, *reps, hosts, modes, 200+i)
		if err != nil {
			return fmt.Errorf("%d MiB: %w", size, err)
		}
		results[size] = ss
	}
	report(os.Stdout, sizes, modes, results, *reps)
	// Pre-copy (CRIU pre-dump iterations) needs the kernel's soft-dirty
	// page tracking; say whether this machine has it.
	out, _ := exec.Command(*criu, "check", "--feature", "mem_dirty_track").CombinedOutput()
	fmt.Fprintf(os.Stdout, "\nPre-copy: `criu check --feature mem_dirty_track`: %s\n", strings.Join(strings.Fields(string(out)), " "))
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

func benchSize(ctx context.Context, p *plane.Plane, inv *lab.Inventory, rootfs, criu, lock, work string, size, reps int, hosts, modes []string, octet int) ([]sample, error) {
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
		s.mig = map[string]migSample{}
		var line strings.Builder
		for _, mode := range modes {
			next := hosts[(host+1)%len(hosts)]
			time.Sleep(300 * time.Millisecond)
			t0 = time.Now()
			res, err := migrateMode(ctx, p, id, hosts[host], next, mode)
			if err != nil {
				return nil, fmt.Errorf("migration (%s): %w", mode, err)
			}
			host = (host + 1) % len(hosts)
			ms := migSample{frozen: res.Frozen, criu: res.CRIU, steps: map[string]time.Duration{}}
			for _, st := range res.Steps {
				ms.steps[st.Step.String()] += st.Duration
			}
			if ms.gap, ms.resets, err = pr.gap(t0, time.Now()); err != nil {
				return nil, fmt.Errorf("migration (%s): %w", mode, err)
			}
			s.mig[mode] = ms
			if os.Getenv("PLANEBENCH_DEBUG") != "" {
				at := t0
				for _, st := range res.Steps {
					at = at.Add(st.Duration)
					fmt.Fprintf(os.Stderr, "  %s: %s ends %s\n", mode, st.Step, at.Format("15:04:05.000"))
				}
			}
			fmt.Fprintf(&line, ", %s frozen %v gap %v resets %d", mode, ms.frozen.Round(time.Millisecond), ms.gap.Round(time.Millisecond), ms.resets)
		}
		fmt.Fprintf(os.Stderr, "  rep %d: checkpoint %v (gap %v), rollback %v (gap %v)%s\n",
			r+1, s.ckWall.Round(time.Millisecond), s.ckGap.Round(time.Millisecond), s.rbDown.Round(time.Millisecond),
			s.rbGap.Round(time.Millisecond), line.String())
		out = append(out, s)
	}
	_ = c
	pr.close()
	where, err := p.Store().Container(id)
	if err != nil {
		return nil, err
	}
	bundle, err := captureBundle(ctx, inv, where.Host, id)
	if err != nil {
		return nil, err
	}
	// The container leaves before the floor and the bare process take the
	// stage.
	if err := p.Remove(ctx, id); err != nil {
		return nil, err
	}
	if err := runFloors(ctx, p, inv, bundle, criu, rootfs, work, size, octet+40, out); err != nil {
		return nil, err
	}
	// The limit: the same workload as a bare process, dumped and restored
	// by CRIU directly, in the same run.
	if err := bare(ctx, p, inv, rootfs, criu, lock, work, size, octet+20, out); err != nil {
		return nil, fmt.Errorf("bare criu: %w", err)
	}
	return out, nil
}

// migrateMode migrates id from src to dst in one mode. "staged" goes
// through the plane; the others run a migrator with their options on the
// plane's runtime and journal, and move the plane's placement by hand.
func migrateMode(ctx context.Context, p *plane.Plane, id, src, dst, mode string) (migrate.Result, error) {
	if mode == "staged" {
		return p.Migrate(ctx, id, dst, []string{"bench"}, "bench")
	}
	c, err := p.Store().Container(id)
	if err != nil {
		return migrate.Result{}, err
	}
	if c.Host != src {
		return migrate.Result{}, fmt.Errorf("%s is on %s, expected %s", id, c.Host, src)
	}
	log, _ := zap.NewDevelopment(zap.IncreaseLevel(zap.WarnLevel))
	m, err := migrate.New(p.Runtime(), p.Store(), filepath.Join(migrationRoot, "legacy"), append([]migrate.Option{migrate.WithLogger(log)}, modeOptions[mode]...)...)
	if err != nil {
		return migrate.Result{}, err
	}
	res, err := m.Migrate(ctx, c.Spec, src, dst)
	if err != nil {
		return res, err
	}
	c.Host, c.Updated = dst, time.Now()
	return res, p.Store().PutContainer(c)
}

// migrationRoot is where non-plane migrators keep their dumps (set in run).
var migrationRoot string

func bare(ctx context.Context, p *plane.Plane, inv *lab.Inventory, rootfs, criu, lock, work string, size, octet int, out []sample) error {
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
			"--tcp-established", "--network-lock", lock, "-o", "dump.log").CombinedOutput(); err != nil {
			return fmt.Errorf("dump: %v: %s %s", err, b, tailLog(filepath.Join(dir, "dump.log")))
		}
		t1 := time.Now()
		// Reap it (our child, or reparented to us as subreaper after a
		// restore) so its PID is free for the restore.
		if err := reap(pid); err != nil {
			return err
		}
		if b, err := exec.CommandContext(ctx, "nsenter", "--net="+ns, criu, "restore", "-D", dir, "-d",
			"--tcp-established", "--network-lock", lock, "-o", "restore.log").CombinedOutput(); err != nil {
			return fmt.Errorf("restore: %v: %s %s", err, b, tailLog(filepath.Join(dir, "restore.log")))
		}
		t2 := time.Now()
		out[i].bareDump, out[i].bareRestore = t1.Sub(t0), t2.Sub(t1)
		var err error
		if out[i].bareCRIU, err = migrate.ReadCRIUStats(dir, dir); err != nil {
			return err
		}
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

func report(w *os.File, sizes []int, modes []string, res map[int][]sample, reps int) {
	fmt.Fprintf(w, "Medians of %d runs, milliseconds. gap = longest time between two answered requests as the client sees it.\n\n", reps)
	hdr := "| MiB | checkpoint | ckpt gap | rollback (plane) | rollback gap | bare dump | bare restore | bare gap (limit) |"
	sep := "|---|---|---|---|---|---|---|---|"
	for _, m := range modes {
		hdr += fmt.Sprintf(" %s frozen | %s gap | %s gap / limit |", m, m, m)
		sep += "---|---|---|"
	}
	fmt.Fprintln(w, hdr+" resets |")
	fmt.Fprintln(w, sep+"---|")
	for _, size := range sizes {
		ss := res[size]
		bg := col(ss, func(s sample) time.Duration { return s.bareGap })
		row := fmt.Sprintf("| %d | %s | %s | %s | %s | %s | %s | %s |", size,
			msf(col(ss, func(s sample) time.Duration { return s.ckWall })), msf(col(ss, func(s sample) time.Duration { return s.ckGap })),
			msf(col(ss, func(s sample) time.Duration { return s.rbDown })), msf(col(ss, func(s sample) time.Duration { return s.rbGap })),
			msf(col(ss, func(s sample) time.Duration { return s.bareDump })), msf(col(ss, func(s sample) time.Duration { return s.bareRestore })), msf(bg))
		resets := 0
		for _, s := range ss {
			resets += s.bareResets
			for _, f := range s.floors {
				resets += f.resets
			}
			for _, m := range s.mig {
				resets += m.resets
			}
		}
		for _, m := range modes {
			mg := col(ss, func(s sample) time.Duration { return s.mig[m].gap })
			row += fmt.Sprintf(" %s | %s | %.2f |", msf(col(ss, func(s sample) time.Duration { return s.mig[m].frozen })), msf(mg), ratio(mg, bg))
		}
		fmt.Fprintf(w, "%s %d |\n", row, resets)
	}
	fmt.Fprint(w, "\nMigration by step (medians, ms). criu frozen = CRIU's own frozen time in the dump, criu restore = its restore time (stats-dump, stats-restore); the bare rows are the same figures for the bare CRIU dump and restore.\n\n")
	steps := []string{"stage", "checkpoint", "prepare", "move-address", "restore", "announce", "remove-source"}
	fmt.Fprintln(w, "| MiB | mode | "+strings.Join(steps, " | ")+" | criu frozen | criu restore | frozen - criu |")
	fmt.Fprintln(w, "|---|---|"+strings.Repeat("---|", len(steps)+3))
	for _, size := range sizes {
		ss := res[size]
		for _, m := range modes {
			row := []string{strconv.Itoa(size), m}
			for _, st := range steps {
				row = append(row, msf(col(ss, func(s sample) time.Duration { return s.mig[m].steps[st] })))
			}
			cf := col(ss, func(s sample) time.Duration { return s.mig[m].criu.Frozen })
			cr := col(ss, func(s sample) time.Duration { return s.mig[m].criu.Restore })
			over := col(ss, func(s sample) time.Duration { return s.mig[m].frozen - s.mig[m].criu.Frozen - s.mig[m].criu.Restore })
			row = append(row, msf(cf), msf(cr), msf(over))
			fmt.Fprintln(w, "| "+strings.Join(row, " | ")+" |")
		}
		row := []string{strconv.Itoa(size), "bare"}
		for range steps {
			row = append(row, "")
		}
		row = append(row, msf(col(ss, func(s sample) time.Duration { return s.bareCRIU.Frozen })),
			msf(col(ss, func(s sample) time.Duration { return s.bareCRIU.Restore })), "")
		fmt.Fprintln(w, "| "+strings.Join(row, " | ")+" |")
	}
	fmt.Fprint(w, "\nThe runc floors: the same container checkpointed and restored by runc alone (no containerd, no shim, no ESCAPE), medians, ms. "+
		"runc: the plane's own OCI spec; runc-no-tmpfs: the same without the /dev and /dev/shm tmpfs mounts, which CRIU archives.\n\n")
	fmt.Fprint(w, "| MiB | floor | checkpoint | restore | gap | criu frozen | criu restore | bare gap (limit) | gap / limit |")
	for _, m := range modes {
		fmt.Fprintf(w, " %s gap / floor gap |", m)
	}
	fmt.Fprintln(w, "\n|---|---|---|---|---|---|---|---|---|"+strings.Repeat("---|", len(modes)))
	for _, size := range sizes {
		ss := res[size]
		bg := col(ss, func(s sample) time.Duration { return s.bareGap })
		for _, f := range floors() {
			fc := func(g func(floorSample) time.Duration) time.Duration {
				return col(ss, func(s sample) time.Duration { return g(s.floors[f.name]) })
			}
			fg := fc(func(f floorSample) time.Duration { return f.gap })
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s | %.2f |", size, f.name,
				msf(fc(func(f floorSample) time.Duration { return f.dump })), msf(fc(func(f floorSample) time.Duration { return f.restore })), msf(fg),
				msf(fc(func(f floorSample) time.Duration { return f.criu.Frozen })), msf(fc(func(f floorSample) time.Duration { return f.criu.Restore })),
				msf(bg), ratio(fg, bg))
			for _, m := range modes {
				fmt.Fprintf(w, " %.2f |", ratio(col(ss, func(s sample) time.Duration { return s.mig[m].gap }), fg))
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprint(w, "\nRollback (medians, ms):\n\n| MiB | kill | restore | checkpoint bytes |\n|---|---|---|---|\n")
	for _, size := range sizes {
		ss := res[size]
		fmt.Fprintf(w, "| %d | %s | %s | %d |\n", size, msf(col(ss, func(s sample) time.Duration { return s.rbKill })),
			msf(col(ss, func(s sample) time.Duration { return s.rbRestore })), ss[len(ss)-1].ckBytes)
	}
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
