package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/escape-mtd/escape/bags"
	escbpf "github.com/escape-mtd/escape/bpf"
	"github.com/escape-mtd/escape/sensor"
)

type opts struct {
	workload string // "syscall" (getppid loop) or "spawn" (fork, exec and wait)
	quick    bool
	out      string
	reps     int
	only     string
	redis    bool
	stats    bool
	from     string
}

// env is the run's cgroups: the loop runs in w; u is another cgroup.
type env struct {
	self      string
	w, u      string
	wID, uID  uint64
	calls     int
	slowCalls int  // for strace and bpftrace
	spawn     bool // the loop spawns /bin/true instead of calling getppid

	// attached is the program the last setup attached to sys_enter (nil
	// for a, f, g): the stats pass reads its kernel run time and run count
	// around the loop. progs are all the programs that setup loaded, by
	// name, sys_enter's among them: the spawn workload reports each.
	attached *ebpf.Program
	progs    map[string]*ebpf.Program
	// learned is the number of distinct bags the last sensor case's
	// collector learned from the kernel's new-bag records.
	learned int
}

// setup returns a function that installs the case's tracer and a teardown,
// plus the number of loop calls to use.
type caseDef struct {
	name, label string
	slow        bool
	setup       func(ctx context.Context, e *env) (func() error, error)
}

func cases() []caseDef {
	return []caseDef{
		{"a", "no sensor", false, func(context.Context, *env) (func() error, error) { return func() error { return nil }, nil }},
		{"b", "empty tp_btf program (floor)", false, func(_ context.Context, e *env) (func() error, error) { return emptyProg(e, true) }},
		{"b2", "empty classic tracepoint program", false, func(_ context.Context, e *env) (func() error, error) { return emptyProg(e, false) }},
		{"c", "sensor, caller watched", false, func(_ context.Context, e *env) (func() error, error) { return sensorCase(e, e.w) }},
		{"d", "sensor, caller unwatched", false, func(_ context.Context, e *env) (func() error, error) { return sensorCase(e, e.u) }},
		{"e", "per-event ring buffer, bags in userspace", false, streamCase},
		{"f", "bpftrace printing every call", true, bpftraceCase},
		{"g", "strace -f", true, nil},
	}
}

func emptyProg(e *env, btf bool) (func() error, error) {
	var objs escbpf.BenchObjects
	if err := escbpf.LoadBenchObjects(&objs, nil); err != nil {
		return nil, fmt.Errorf("load empty programs: %w", err)
	}
	var l link.Link
	var err error
	if btf {
		l, err = link.AttachTracing(link.TracingOptions{Program: objs.EmptyBtf})
	} else {
		l, err = link.Tracepoint("raw_syscalls", "sys_enter", objs.EmptyTp, nil)
	}
	if err != nil {
		objs.Close()
		return nil, fmt.Errorf("attach empty program: %w", err)
	}
	e.attached = objs.EmptyBtf
	if !btf {
		e.attached = objs.EmptyTp
	}
	e.progs = map[string]*ebpf.Program{"empty": e.attached}
	return func() error { return errors.Join(l.Close(), objs.Close()) }, nil
}

// sensorCase runs the real sensor with its collector draining epochs.
func sensorCase(e *env, watch string) (func() error, error) {
	p, err := sensor.LoadProbe(sensor.WithWindow(10), sensor.WithEpoch(1000))
	if err != nil {
		return nil, err
	}
	col := sensor.NewCollector(p, func(sensor.Epoch) {}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- col.Run(ctx) }()
	if _, _, err := p.Watch(watch); err != nil {
		cancel()
		<-done
		p.Close()
		return nil, err
	}
	e.attached, e.progs = p.Program(), p.Programs()
	return func() error {
		cancel()
		err := <-done
		e.learned = col.Assembler().DictSize()
		return errors.Join(err, p.Close())
	}, nil
}

// streamCase: every call through the ring buffer, windows and bags built in
// userspace with bags.Windower, as a sysdig-based design would.
func streamCase(_ context.Context, e *env) (func() error, error) {
	s, err := sensor.LoadStreamer(0)
	if err != nil {
		return nil, err
	}
	win, _ := bags.NewWindower(10, 1000)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var rec ringbuf.Record
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := s.Read(time.Now().Add(50*time.Millisecond), &rec)
			if err != nil {
				continue
			}
			win.Push(c.Nr)
		}
	}()
	if err := s.Watch(e.wID); err != nil {
		close(stop)
		wg.Wait()
		s.Close()
		return nil, err
	}
	e.attached = s.Program()
	e.progs = map[string]*ebpf.Program{"stream_enter": e.attached}
	return func() error {
		close(stop)
		wg.Wait()
		return s.Close()
	}, nil
}

func bpftraceCase(ctx context.Context, e *env) (func() error, error) {
	prog := fmt.Sprintf(`tracepoint:raw_syscalls:sys_enter /cgroup == %d/ { printf("%%d\n", args->id); }`, e.wID)
	cmd := exec.CommandContext(ctx, "bpftrace", "-e", prog)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bpftrace: %w", err)
	}
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n') // "Attaching 1 probe..." once attached
	if err != nil || !strings.HasPrefix(line, "Attaching") {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("bpftrace did not attach: %q %v", line, err)
	}
	go io.Copy(io.Discard, r) //nolint:errcheck
	return func() error {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
		return nil
	}, nil
}

// sample is one repetition of a case: the loop's median chunk (wall clock,
// ns per call) and the whole machine's busy CPU time over the child's run,
// per call.
type sample struct{ wall, cpu float64 }

// measure runs the loop child in cgroup dir (optionally under strace).
func measure(ctx context.Context, e *env, dir string, calls int, strace bool) (sample, error) {
	fd, err := os.Open(dir)
	if err != nil {
		return sample{}, err
	}
	defer fd.Close()
	mode := "loop"
	if e.spawn {
		mode = "spawn"
	}
	args := []string{e.self, mode, strconv.Itoa(calls)}
	if strace {
		args = append([]string{"strace", "-f", "-o", "/dev/null"}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	busy0, err := machineBusy()
	if err != nil {
		return sample{}, err
	}
	out, err := cmd.Output()
	if err != nil {
		return sample{}, fmt.Errorf("loop child: %w", err)
	}
	busy1, err := machineBusy()
	if err != nil {
		return sample{}, err
	}
	wall, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		return sample{}, fmt.Errorf("loop child output %q: %w", out, err)
	}
	return sample{wall: wall, cpu: float64((busy1 - busy0).Nanoseconds()) / float64(calls)}, nil
}

func mkCgroups(e *env) (func(), error) {
	root, err := sensor.UnifiedRoot()
	if err != nil {
		return nil, err
	}
	base := filepath.Join(root, fmt.Sprintf("escape-bench-%d", os.Getpid()))
	e.w, e.u = filepath.Join(base, "w"), filepath.Join(base, "u")
	for _, d := range []string{base, e.w, e.u} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, fmt.Errorf("bench cgroup: %w", err)
		}
	}
	if e.wID, err = sensor.CgroupID(e.w); err != nil {
		return nil, err
	}
	if e.uID, err = sensor.CgroupID(e.u); err != nil {
		return nil, err
	}
	return func() {
		for i := 0; i < 50; i++ {
			os.Remove(e.w)
			os.Remove(e.u)
			if os.Remove(base) == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}, nil
}
