package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/tools/lab"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The runc floor sits between the bare limit and the plane: the container
// exactly as the plane runs it (same OCI spec, mounts, namespaces, cgroup
// and CRIU configuration file), checkpointed and restored by runc itself,
// with no containerd, shim or ESCAPE in the path. The design requires runc
// under containerd, so no migration through it can be faster than this; the
// gap between the floor and the bare limit is what running CRIU inside a
// runc container costs, and the gap between the plane and the floor is what
// containerd and ESCAPE add.

// floor is one way of running the plane's container under runc alone.
type floor struct {
	name string
	// dropTmpfs removes the /dev and /dev/shm tmpfs mounts from the spec
	// (runc then makes /dev in the root filesystem): the floor of a
	// container whose mounts give CRIU nothing to archive.
	dropTmpfs bool
}

// floors are the floors each size measures, in this order.
func floors() []floor { return []floor{{name: "runc"}, {name: "runc-no-tmpfs", dropTmpfs: true}} }

// floorSample is one checkpoint and restore of a floor.
type floorSample struct {
	dump, restore, gap time.Duration
	criu               migrate.CRIUStats
	resets             int
}

// runcBundle is the plane container's OCI spec, taken from the bundle runc
// runs it from, with its CRIU configuration file's content.
type runcBundle struct {
	spec     specs.Spec
	criuConf []byte
}

// captureBundle reads the OCI spec runc runs id from on host, through runc's
// own state (its bundle path), so the floor runs the very spec the plane
// produced rather than a reconstruction of it.
func captureBundle(ctx context.Context, inv *lab.Inventory, host, id string) (runcBundle, error) {
	h, ok := inv.Host(host)
	if !ok {
		return runcBundle{}, fmt.Errorf("host %s not in the inventory", host)
	}
	// The shim keeps each containerd namespace's containers in a runc root
	// of its own, below the host's.
	out, err := exec.CommandContext(ctx, "runc", "--root", filepath.Join(h.RuncRoot, inv.Namespace), "state", id).Output()
	if err != nil {
		return runcBundle{}, fmt.Errorf("runc state %s on %s: %w", id, host, err)
	}
	var st struct {
		Bundle string `json:"bundle"`
	}
	if err := json.Unmarshal(out, &st); err != nil || st.Bundle == "" {
		return runcBundle{}, fmt.Errorf("runc state %s: no bundle in %q (%v)", id, out, err)
	}
	raw, err := os.ReadFile(filepath.Join(st.Bundle, "config.json"))
	if err != nil {
		return runcBundle{}, fmt.Errorf("bundle of %s: %w", id, err)
	}
	var b runcBundle
	if err := json.Unmarshal(raw, &b.spec); err != nil {
		return runcBundle{}, fmt.Errorf("bundle of %s: %w", id, err)
	}
	if conf := b.spec.Annotations["org.criu.config"]; conf != "" {
		if b.criuConf, err = os.ReadFile(conf); err != nil {
			return runcBundle{}, fmt.Errorf("criu config of %s: %w", id, err)
		}
	}
	return b, nil
}

// floorRun is one floor's container, running under runc alone on the
// first host's fabric with an address of its own.
type floorRun struct {
	f                floor
	id, host, bundle string
	root, criu, log  string
	rt               *migrate.Runtime
	work             string
	stdin, stdout    [2]*os.File // read and write ends of the stdio pipes
	pr               *prober
	started          bool
}

// startFloor runs the captured spec under runc for floor f.
func startFloor(ctx context.Context, p *plane.Plane, inv *lab.Inventory, b runcBundle, f floor, criu, rootfs, work string, size, octet int) (_ *floorRun, err error) {
	fr := &floorRun{f: f, id: fmt.Sprintf("%s-%d", f.name, size), host: inv.Hosts[0].Name, criu: criu, rt: p.Runtime(), work: work,
		root: filepath.Join(work, "runc-state")}
	fr.bundle = filepath.Join(work, "runc-bundle-"+fr.id)
	fr.log = filepath.Join(fr.bundle, "runc.log")
	defer func() {
		if err != nil {
			fr.close()
		}
	}()
	ms := migrate.Spec{ID: fr.id, RootFS: rootfs, Args: []string{"x"}, MAC: fmt.Sprintf("02:e5:00:00:0c:%02x", octet%256)}
	if ms.IP, err = parsePrefix(fmt.Sprintf("198.18.1.%d/15", octet)); err != nil {
		return nil, err
	}
	if err := fr.rt.PrepareNetwork(fr.host, ms, true); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(fr.bundle, 0o700); err != nil {
		return nil, err
	}
	spec := b.spec
	spec.Root = &specs.Root{Path: rootfs, Readonly: b.spec.Root != nil && b.spec.Root.Readonly}
	spec.Hostname = fr.id
	spec.Linux.CgroupsPath = "/" + inv.CgroupParent + "/" + fr.host + "/" + fr.id
	spec.Linux.Namespaces = slices.Clone(spec.Linux.Namespaces)
	for i, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			spec.Linux.Namespaces[i].Path = "/run/netns/" + migrate.CtNetns(fr.host, fr.id)
		}
	}
	if f.dropTmpfs {
		spec.Mounts = slices.DeleteFunc(slices.Clone(spec.Mounts), func(m specs.Mount) bool {
			return m.Type == "tmpfs" && (m.Destination == "/dev" || m.Destination == "/dev/shm")
		})
	}
	spec.Annotations = map[string]string{}
	if b.criuConf != nil {
		conf := filepath.Join(fr.bundle, "criu.conf")
		if err := os.WriteFile(conf, b.criuConf, 0o600); err != nil {
			return nil, err
		}
		spec.Annotations["org.criu.config"] = conf
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(fr.bundle, "config.json"), raw, 0o600); err != nil {
		return nil, err
	}
	// The container's stdio are pipes, as under containerd: CRIU carries a
	// pipe across as an inherited descriptor, but cannot dump a file that
	// lies outside the container's mounts.
	for _, pp := range []*[2]*os.File{&fr.stdin, &fr.stdout} {
		if pp[0], pp[1], err = os.Pipe(); err != nil {
			return nil, err
		}
	}
	go func() { _, _ = io.Copy(io.Discard, fr.stdout[0]) }()
	if err := fr.runc(ctx, "run", "-d", "--bundle", fr.bundle, "--pid-file", fr.pidFile(), fr.id); err != nil {
		return nil, err
	}
	fr.started = true
	fr.pr = newProber(inv.Client.Netns, fmt.Sprintf("198.18.1.%d:7000", octet))
	if err := fr.pr.waitReady(60 * time.Second); err != nil {
		return nil, err
	}
	return fr, nil
}

func (fr *floorRun) pidFile() string { return filepath.Join(fr.bundle, "pid") }

func (fr *floorRun) pid() (int, error) {
	b, err := os.ReadFile(fr.pidFile())
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func (fr *floorRun) runc(ctx context.Context, args ...string) error {
	if err := os.Truncate(fr.log, 0); err != nil && !os.IsNotExist(err) {
		return err
	}
	cmd := exec.CommandContext(ctx, "runc", append([]string{"--root", fr.root, "--criu", fr.criu, "--log", fr.log}, args...)...)
	if args[0] == "run" || args[0] == "restore" {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = fr.stdin[0], fr.stdout[1], fr.stdout[1]
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("runc %s: %v: %s", args[0], err, tailLog(fr.log))
	}
	return nil
}

// cycle checkpoints the container with runc, which stops it, and restores
// it from the images, measuring the client's gap across both.
func (fr *floorRun) cycle(ctx context.Context, rep int) (floorSample, error) {
	dir := filepath.Join(fr.work, fmt.Sprintf("%s-images-%d", fr.id, rep))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return floorSample{}, err
	}
	defer os.RemoveAll(dir)
	old, err := fr.pid()
	if err != nil {
		return floorSample{}, err
	}
	t0 := time.Now()
	if err := fr.runc(ctx, "checkpoint", "--tcp-established", "--image-path", dir, "--work-path", dir, fr.id); err != nil {
		return floorSample{}, fmt.Errorf("%w %s", err, criuErrors(filepath.Join(dir, "dump.log")))
	}
	t1 := time.Now()
	// The checkpointed init was reparented to us (subreaper): reap it so
	// the restore can take its PID back.
	if err := reap(old); err != nil {
		return floorSample{}, err
	}
	if err := fr.runc(ctx, "restore", "-d", "--tcp-established", "--image-path", dir, "--work-path", dir,
		"--bundle", fr.bundle, "--pid-file", fr.pidFile(), fr.id); err != nil {
		return floorSample{}, fmt.Errorf("%w %s", err, criuErrors(filepath.Join(dir, "restore.log")))
	}
	t2 := time.Now()
	fs := floorSample{dump: t1.Sub(t0), restore: t2.Sub(t1)}
	if fs.criu, err = migrate.ReadCRIUStats(dir, dir); err != nil {
		return fs, err
	}
	if fs.gap, fs.resets, err = fr.pr.gap(t0, time.Now()); err != nil {
		return fs, err
	}
	fmt.Fprintf(os.Stderr, "  %s rep %d: checkpoint %v restore %v gap %v resets %d\n", fr.f.name, rep+1, fs.dump.Round(time.Millisecond),
		fs.restore.Round(time.Millisecond), fs.gap.Round(time.Millisecond), fs.resets)
	return fs, nil
}

func (fr *floorRun) close() {
	if fr.pr != nil {
		fr.pr.close()
	}
	if fr.started {
		_ = fr.runc(context.Background(), "delete", "-f", fr.id)
		if n, err := fr.pid(); err == nil {
			_ = reap(n)
		}
	}
	for _, f := range []*os.File{fr.stdin[0], fr.stdin[1], fr.stdout[0], fr.stdout[1]} {
		if f != nil {
			f.Close()
		}
	}
	_ = fr.rt.RemoveNetwork(fr.host, fr.id)
	os.RemoveAll(fr.bundle)
}

// runFloors measures every floor once per sample, the floors interleaved
// within each repetition so that a disturbed moment of the machine falls on
// all of them.
func runFloors(ctx context.Context, p *plane.Plane, inv *lab.Inventory, b runcBundle, criu, rootfs, work string, size, octet int, out []sample) error {
	var runs []*floorRun
	defer func() {
		for _, fr := range runs {
			fr.close()
		}
	}()
	for i, f := range floors() {
		fr, err := startFloor(ctx, p, inv, b, f, criu, rootfs, work, size, octet+i)
		if err != nil {
			return fmt.Errorf("%s floor: %w", f.name, err)
		}
		runs = append(runs, fr)
	}
	for i := range out {
		out[i].floors = map[string]floorSample{}
		for _, fr := range runs {
			time.Sleep(300 * time.Millisecond)
			fs, err := fr.cycle(ctx, i)
			if err != nil {
				return fmt.Errorf("%s floor: %w", fr.f.name, err)
			}
			out[i].floors[fr.f.name] = fs
		}
	}
	return nil
}

// criuErrors returns the error lines of a CRIU log, which name the cause;
// its tail only says that the dump failed.
func criuErrors(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var errs []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "Error (") {
			errs = append(errs, strings.TrimSpace(l))
		}
	}
	return strings.Join(errs, " | ")
}
