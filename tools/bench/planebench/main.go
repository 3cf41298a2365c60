// Command planebench measures the plane on the networked lab: safe
// checkpoint time, rollback downtime and live-migration downtime, for
// several container memory sizes, through a plane run in this process that
// reaches each host's node agent over the fabric, from the lab's plane
// namespace, with the plane's certificate (as from a machine of its own).
//
//	ESCAPE_LAB=escbench go run ./tools/bench/planebench -sizes 1,64,256 -reps 3 -modes staged,full
//
// The workload (memsrv) is built into an OCI image and imported into every
// host's containerd (lab.ImportImage); the plane deploys it by reference.
// A prober in the lab's client namespace sends one request every 2 ms and
// reports the longest gap between two answers around each operation: the
// downtime as a client sees it. The plane's own figures (checkpoint wall
// time, rollback downtime, migration frozen time and its steps) come from
// its results.
//
// -shared-storage says which lab to measure on: with shared storage
// (checkpoint images on the storage every host mounts) or without (images
// stream agent to agent). With -up (the default) the lab named by -lab-name
// ($ESCAPE_LAB) is brought up that way, rebuilt if it is up the other way.
//
// -modes compares migration paths in the same run, each rep migrating once
// per mode, interleaved: "staged" is the plane's own (destination staged
// before the freeze, lazy restore from migrate.DefaultLazyFrom); "full"
// and "lazy" are the same with lazy restore never and always. Each mode
// has a plane (lazy_restore_from never or always) and a container of its
// own; checkpoint and rollback are measured on each.
//
// -bare adds the limit: the same workload as a bare process in host h1's
// namespaces, dumped and restored by the host's CRIU directly (lab.Command),
// in the same run.
//
// -what rpc measures the agent API's own cost instead (rpc.go): one unary
// round trip plane→agent against a plain TCP echo between the same
// namespaces, and agent-to-agent image streaming (Offer + Fetch) against
// plain TCP copies of the same bytes between the same two hosts. It needs
// the lab without shared storage.
package main

import (
	"context"
	"errors"
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
	ck      map[string]ckSample
	mig     map[string]migSample
	bare    bareSample
	ckBytes int64
}

// ckSample is one safe checkpoint and one rollback in one mode's container.
type ckSample struct {
	ckWall, ckGap                    time.Duration
	rbDown, rbKill, rbRestore, rbGap time.Duration
	bytes                            int64
}

// migSample is one migration in one mode.
type migSample struct {
	frozen, gap time.Duration
	steps       map[string]time.Duration
	criu        migrate.CRIUStats
	transfer    migrate.TransferResult
	resets      int
	// failed is the error of a migration that failed (and was reverted).
	failed string
}

type bareSample struct {
	dump, restore, gap time.Duration
	criu               migrate.CRIUStats
	resets             int
}

// lazyFrom is each mode's lazy_restore_from ("" is the plane's default).
var lazyFrom = map[string]string{"staged": "", "full": "never", "lazy": "always"}

// memsrvRef is the reference the workload's image is imported under.
const memsrvRef = "escape.local/memsrv:latest"

func run() error {
	sizesF := flag.String("sizes", "1,64,256", "container memory sizes in MiB")
	reps := flag.Int("reps", 3, "repetitions per size")
	modesF := flag.String("modes", "staged,full", "migration paths to compare (staged, full, lazy)")
	name := flag.String("lab-name", envOr("ESCAPE_LAB", lab.DefaultName), "the lab to run on (lab.WithName)")
	shared := flag.Bool("shared-storage", true, "measure on the lab with shared storage (false: images stream agent to agent)")
	up := flag.Bool("up", true, "bring the lab up with -shared-storage (rebuilding it if it is up the other way)")
	down := flag.Bool("down", false, "take the lab down at the end")
	bin := flag.String("bin", "bin", "the ESCAPE binaries the lab's agents run (make build)")
	bareF := flag.Bool("bare", true, "also measure the bare CRIU limit inside host h1")
	lock := flag.String("network-lock", "nftables", "CRIU network lock (nftables or iptables), for the plane's containers and the bare limit alike")
	what := flag.String("what", "plane", "what to measure: plane (checkpoint, rollback, migration) and/or rpc (the agent API's own cost), comma-separated")
	calls := flag.Int("rpc-calls", 500, "-what rpc: round trips per measurement")
	rpcMiB := flag.Int("rpc-mib", 256, "-what rpc: memsrv size whose checkpoint image is streamed")
	rpcReps := flag.Int("rpc-reps", 3, "-what rpc: streams of each kind")
	flag.Parse()
	var modes []string
	for _, m := range strings.Split(*modesF, ",") {
		m = strings.TrimSpace(m)
		if _, ok := lazyFrom[m]; !ok {
			return fmt.Errorf("-modes: unknown mode %q (staged, full, lazy)", m)
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
	whats := map[string]bool{}
	for _, w := range strings.Split(*what, ",") {
		w = strings.TrimSpace(w)
		if w != "plane" && w != "rpc" {
			return fmt.Errorf("-what: unknown %q (plane, rpc)", w)
		}
		whats[w] = true
	}
	if whats["rpc"] && *shared {
		return errors.New("-what rpc streams images agent to agent: it needs -shared-storage=false")
	}
	ctx := context.Background()
	closeInherited()
	// Restored bare processes are orphaned when criu exits: adopt them.
	if err := setSubreaper(); err != nil {
		return err
	}
	inv, err := ensureLab(ctx, *name, *bin, *shared, *up)
	if err != nil {
		return err
	}
	if *down {
		defer func() {
			if err := lab.Down(context.Background(), lab.WithName(*name)); err != nil {
				fmt.Fprintln(os.Stderr, "planebench: lab down:", err)
			}
		}()
	}
	// Under /var/tmp, which every host sees at the same path (each has its
	// own /tmp): the bare limit runs memsrv and dumps it there.
	work, err := os.MkdirTemp("/var/tmp", "planebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	memsrv := filepath.Join(work, "memsrv")
	if err := buildMemsrv(memsrv); err != nil {
		return err
	}
	if err := importMemsrv(ctx, inv, memsrv, filepath.Join(work, "rootfs")); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "lab %s: %d hosts, shared storage %v; nproc %s; load %s\n", *name, len(inv.Hosts), inv.SharedStorage, nproc(), loadavg())
	log, _ := zap.NewDevelopment(zap.IncreaseLevel(zap.WarnLevel))
	planes := map[string]*plane.Plane{}
	defer func() {
		for _, p := range planes {
			p.Close()
		}
	}()
	open := func(mode string) (*plane.Plane, error) {
		cfg, err := inv.PlaneConfigIn(filepath.Join(work, "plane-"+mode))
		if err != nil {
			return nil, err
		}
		one := 1
		cfg.Defaults = plane.PolicyOverrides{CleanEpochs: &one, Retain: &one}
		cfg.NetworkLock = *lock
		if lazyFrom[mode] != "" {
			cfg.LazyRestoreFrom = lazyFrom[mode]
		}
		opts := []plane.Option{plane.WithLogger(log), plane.WithAgentDialer(lab.NetnsDialer(inv.Plane.Netns))}
		return plane.New(cfg, opts...)
	}
	if whats["rpc"] {
		p, err := open("rpc")
		if err != nil {
			return err
		}
		planes["rpc"] = p
		if err := rpcBench(ctx, os.Stdout, p, inv, work, *calls, *rpcMiB, *rpcReps); err != nil {
			return fmt.Errorf("rpc: %w", err)
		}
	}
	if !whats["plane"] {
		return nil
	}
	for _, m := range modes {
		p, err := open(m)
		if err != nil {
			return err
		}
		planes[m] = p
	}
	hosts := []string{}
	for _, h := range inv.Hosts {
		hosts = append(hosts, h.Name)
	}
	if len(hosts) < 2 {
		return errors.New("migration needs at least two lab hosts")
	}
	loadStart := loadavg()
	results := map[int][]sample{}
	for i, size := range sizes {
		ss, err := benchSize(ctx, planes, inv, size, *reps, hosts, modes, 200+10*i)
		if err != nil {
			return fmt.Errorf("%d MiB: %w", size, err)
		}
		if *bareF {
			if err := bare(ctx, inv, memsrv, *lock, work, size, 7100+i, ss); err != nil {
				return fmt.Errorf("%d MiB: bare criu: %w", size, err)
			}
		}
		results[size] = ss
	}
	fmt.Fprintf(os.Stdout, "Lab %s: %d hosts, shared storage %v (%s). nproc %s; load average at the start %s, at the end %s.\n\n",
		*name, len(hosts), inv.SharedStorage, map[bool]string{true: "checkpoint images on the storage every host mounts", false: "checkpoint images stream agent to agent"}[inv.SharedStorage],
		nproc(), loadStart, loadavg())
	report(os.Stdout, sizes, modes, results, *reps, *bareF)
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// ensureLab returns the inventory of the lab called name, brought up (with
// up) with or without shared storage as asked.
func ensureLab(ctx context.Context, name, bin string, shared, up bool) (*lab.Inventory, error) {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(bin, "escape-sensor")); err != nil {
		return nil, fmt.Errorf("%s/escape-sensor is missing: run make build first", bin)
	}
	opts := []lab.Option{lab.WithName(name)}
	st := lab.GetStatus(ctx, opts...)
	if st.Up && st.Healthy() && st.Inventory.Agents && st.Inventory.SharedStorage == shared && st.Inventory.BinDir == bin {
		if err := lab.RestartStaleAgents(ctx, st.Inventory, nil); err != nil {
			return nil, err
		}
		return st.Inventory, nil
	}
	if !up {
		if !st.Up {
			return nil, fmt.Errorf("lab %s is not up (run: ESCAPE_LAB=%s bin/escape-lab up --shared-storage=%v, or -up)", name, name, shared)
		}
		return nil, fmt.Errorf("lab %s is not healthy or has shared storage %v, want %v (use -up)", name, st.Inventory.SharedStorage, shared)
	}
	if st.Up {
		fmt.Fprintf(os.Stderr, "lab %s: down, to bring it up with shared storage %v\n", name, shared)
		if err := lab.Down(ctx, opts...); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(os.Stderr, "lab %s: up, shared storage %v\n", name, shared)
	return lab.Up(ctx, append(opts, lab.WithHosts(lab.DefaultHosts), lab.WithSharedStorage(shared), lab.WithBinDir(bin))...)
}

func buildMemsrv(dst string) error {
	cmd := exec.Command("go", "build", "-o", dst, "./tools/bench/planebench/memsrv")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build memsrv (run from the repository's root): %v: %s", err, out)
	}
	return nil
}

// importMemsrv makes the workload's image: the lab's busybox root
// filesystem with the (static) memsrv at /memsrv, imported into every
// host's containerd.
func importMemsrv(ctx context.Context, inv *lab.Inventory, memsrv, rootfs string) error {
	bb, ok := inv.Images["busybox"]
	if !ok {
		return errors.New("the lab has no busybox image")
	}
	if out, err := exec.Command("cp", "-a", bb.RootFS, rootfs).CombinedOutput(); err != nil {
		return fmt.Errorf("copy busybox rootfs: %v: %s", err, out)
	}
	if out, err := exec.Command("cp", memsrv, filepath.Join(rootfs, "memsrv")).CombinedOutput(); err != nil {
		return fmt.Errorf("copy memsrv: %v: %s", err, out)
	}
	return lab.ImportImage(ctx, inv, rootfs, memsrvRef)
}

// deployed is one mode's container of one size.
type deployed struct {
	id, ip string
	p      *plane.Plane
	pr     *prober
	epoch  uint64
}

func benchSize(ctx context.Context, planes map[string]*plane.Plane, inv *lab.Inventory, size, reps int, hosts, modes []string, octet int) ([]sample, error) {
	fmt.Fprintf(os.Stderr, "== %d MiB\n", size)
	cs := map[string]*deployed{}
	defer func() {
		for _, d := range cs {
			if d.pr != nil {
				d.pr.close()
			}
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			if err := d.p.Remove(rctx, d.id, "bench"); err != nil {
				fmt.Fprintf(os.Stderr, "planebench: remove %s: %v\n", d.id, err)
			}
			cancel()
		}
	}()
	for i, mode := range modes {
		d := &deployed{id: fmt.Sprintf("bench-%d-%s", size, mode), ip: fmt.Sprintf("198.18.1.%d", octet+i), p: planes[mode]}
		if _, err := d.p.Deploy(ctx, plane.ContainerConfig{ID: d.id, Image: memsrvRef, Host: hosts[0], IP: d.ip,
			Args: []string{"/memsrv", "-mem", strconv.Itoa(size), "-listen", ":7000"}}, "bench"); err != nil {
			return nil, fmt.Errorf("deploy (%s): %w", mode, err)
		}
		cs[mode] = d
		d.pr = newProber(inv.Client.Netns, d.ip+":7000")
		if err := d.pr.waitReady(60 * time.Second); err != nil {
			return nil, err
		}
	}
	var out []sample
	for r := 0; r < reps; r++ {
		s := sample{ck: map[string]ckSample{}, mig: map[string]migSample{}}
		var line strings.Builder
		for _, mode := range modes {
			d := cs[mode]
			d.epoch++
			if _, err := d.p.HandleReport(ctx, plane.Report{Container: d.id, Epoch: d.epoch}, "bench"); err != nil {
				return nil, err
			}
			var c ckSample
			time.Sleep(300 * time.Millisecond)
			t0 := time.Now()
			ck, err := d.p.Checkpoint(ctx, d.id, false, "bench")
			if err != nil {
				return nil, fmt.Errorf("checkpoint (%s): %w", mode, err)
			}
			c.ckWall, c.bytes = time.Since(t0), ck.Bytes
			if c.ckGap, _, err = d.pr.gap(t0, time.Now()); err != nil {
				return nil, fmt.Errorf("checkpoint (%s): %w", mode, err)
			}
			time.Sleep(300 * time.Millisecond)
			t0 = time.Now()
			rb, err := d.p.Rollback(ctx, d.id, []string{"bench"}, "bench")
			if err != nil {
				return nil, fmt.Errorf("rollback (%s): %w", mode, err)
			}
			c.rbDown, c.rbKill, c.rbRestore = time.Duration(rb.Downtime), time.Duration(rb.Kill), time.Duration(rb.Restore)
			if c.rbGap, _, err = d.pr.gap(t0, time.Now()); err != nil {
				return nil, fmt.Errorf("rollback (%s): %w", mode, err)
			}
			s.ck[mode], s.ckBytes = c, c.bytes
			fmt.Fprintf(&line, ", %s checkpoint %v (gap %v) rollback %v (gap %v)", mode, c.ckWall.Round(time.Millisecond),
				c.ckGap.Round(time.Millisecond), c.rbDown.Round(time.Millisecond), c.rbGap.Round(time.Millisecond))
		}
		for _, mode := range modes {
			d := cs[mode]
			rec, err := d.p.Store().Container(d.id)
			if err != nil {
				return nil, err
			}
			next := hosts[(indexOf(hosts, rec.Host)+1)%len(hosts)]
			time.Sleep(300 * time.Millisecond)
			t0 := time.Now()
			res, err := d.p.Migrate(ctx, d.id, next, []string{"bench"}, "bench")
			if err != nil {
				// The plane reverts a failed migration: say so, count it
				// and go on (the medians leave it out).
				if _, _, gerr := d.pr.gap(t0, time.Now()); gerr != nil {
					return nil, fmt.Errorf("migration (%s): %w; then no answer: %v", mode, err, gerr)
				}
				s.mig[mode] = migSample{failed: err.Error()}
				fmt.Fprintf(&line, ", %s FAILED (%v)", mode, err)
				continue
			}
			ms := migSample{frozen: res.Frozen, criu: res.CRIU, transfer: res.Transfer, steps: map[string]time.Duration{}}
			var names []string
			for _, st := range res.Steps {
				k := st.Step.String()
				if st.Undo {
					k = "undo-" + k
				}
				ms.steps[k] += st.Duration
				names = append(names, k)
			}
			noteSteps(names)
			if ms.gap, ms.resets, err = d.pr.gap(t0, time.Now()); err != nil {
				return nil, fmt.Errorf("migration (%s): %w", mode, err)
			}
			s.mig[mode] = ms
			if os.Getenv("PLANEBENCH_DEBUG") != "" {
				at := t0
				for _, st := range res.Steps {
					at = at.Add(st.Duration)
					fmt.Fprintf(os.Stderr, "  %s: %s %v ends %s\n", mode, st.Step, st.Duration.Round(time.Millisecond), at.Format("15:04:05.000"))
				}
			}
			fmt.Fprintf(&line, ", %s frozen %v gap %v resets %d", mode, ms.frozen.Round(time.Millisecond), ms.gap.Round(time.Millisecond), ms.resets)
		}
		// The same line format as the direct path's planebench, which
		// compare.sh reads from both.
		fmt.Fprintf(os.Stderr, "  rep %d: load %s%s\n", r+1, loadavg(), line.String())
		out = append(out, s)
	}
	return out, nil
}

func indexOf(xs []string, x string) int {
	for i, y := range xs {
		if y == x {
			return i
		}
	}
	return 0
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

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func nproc() string { return strconv.Itoa(numCPU()) }

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
