package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/escape-mtd/escape/internal/atomicfile"
	"go.uber.org/zap"
)

// Lazy restore. A full CRIU restore reads every page of the dump into
// memory the restored task faults in 4 KiB at a time: on the lab's VMs that
// is 210 to 300 ms of the frozen window for 64 MiB, most of a bare CRIU
// restore. With lazy-pages, CRIU restores everything but the anonymous
// memory, resumes the task, and a `criu lazy-pages` daemon fills that
// memory through userfaultfd: the pages the task touches first, then all
// the others in large UFFDIO_COPY batches, which skip the per-page faults.
// Measured with a bare process holding 64 MiB: 263-266 ms to restore in
// full, 46-55 ms to resume lazily and 64-69 ms until every page was in,
// with the same checksum of its memory before and after (docs/plane.md).
//
// The daemon reads the dump from shared storage, so no page depends on the
// source host. Until it has copied the last page the restored task's memory
// is incomplete, so:
//   - no packet reaches the copy (guardHold, set when it is staged) until
//     the daemon has exited cleanly and that is journalled
//     (Record.LazyDone): no client request is ever served by an
//     incomplete copy (what it sends meanwhile is what the dump's sockets
//     held, which the source would send again after an undo);
//   - a daemon that dies or stalls fails the step: CRIU, waiting for pages
//     that will not come, is killed so that runc fails and cleans up, and
//     the migration reverts (the held copy is killed and the source
//     restored from the same, intact, dump);
//   - a migrator that crashes before LazyDone leaves a copy that Recover
//     undoes rather than finishes.
//
// runc has no option for lazy restore: it reads the container's CRIU
// configuration file, so lazy-pages is in that file during the
// destination's restore only, and out of it before anything else can dump
// or restore the container.

// WithLazyRestore sets whether staged migrations restore memory lazily on a
// destination whose Host names its CRIU binary (default true).
func WithLazyRestore(on bool) Option { return func(m *Migrator) { m.lazy = on } }

// DefaultLazyFrom is the memory from which a staged migration restores
// lazily. Below it the daemon's start and the copy's hold cost more frozen
// time than faulting the pages in saves. planebench, lazy against full
// restore in the same runs, medians of 3 frozen windows: 1 MiB 470–538
// against 431–456 ms, 4 MiB 504 against 441, 16 MiB 465 against 496, and
// 64 MiB 499 against 667 (session 5); BENCHMARKS.md, issue 5.
const DefaultLazyFrom = 16 << 20

// WithLazyFrom sets the memory (Runtime.Memory of the source copy, read
// before anything is staged) from which a staged migration restores lazily
// (default DefaultLazyFrom; 0: always).
func WithLazyFrom(bytes uint64) Option { return func(m *Migrator) { m.lazyFrom = bytes } }

// canLazy reports whether a staged migration of spec to dest restores
// lazily: the destination names its CRIU, the container has a CRIU
// configuration file through which runc can be told, and its memory on
// source is large enough for lazy restore to pay (WithLazyFrom). A memory
// that cannot be read does not stop a lazy restore, which works at any
// size.
func (m *Migrator) canLazy(ctx context.Context, source, dest string, spec Spec) bool {
	if !m.lazy || !m.rt.CanRestoreLazily(dest, spec) {
		return false
	}
	if m.lazyFrom == 0 {
		return true
	}
	mem, err := m.rt.Memory(ctx, source, spec.ID)
	if err != nil {
		m.log.Warn("lazy restore: memory unknown, restoring lazily", zap.String("container", spec.ID), zap.Error(err))
		return true
	}
	return mem >= m.lazyFrom
}

// restoreLazy is step 4 of a lazy migration: it starts the daemon, then the
// staged task, and returns once every page is in and that is journalled.
// Nothing reaches the copy throughout (guardHold).
func (r *run) restoreLazy(ctx context.Context, work RestoreOption) error {
	m, spec, dest := r.m, r.rec.Spec, r.rec.Dest
	h, _ := m.rt.host(dest)
	start := func(ctx context.Context) error { return m.rt.StartStaged(ctx, dest, spec.ID, work) }
	if err := m.rt.lazily(ctx, h, spec, r.rec.Image, r.rec.Image+".restore-"+dest, start, m.afterLazyStart); err != nil {
		return err
	}
	r.res.Lazy = true
	r.rec.LazyDone = true
	return r.save(ctx)
}

// RestoreLazily makes Restore bring the container's memory in lazily, as a
// staged migration does, and hold every packet off the copy (guardHold)
// until the last page is in. It needs a host that names its CRIU, a
// container with a CRIU configuration file, and a RestoreWorkDir
// (CanRestoreLazily). On error no copy of the restore is left running:
// the caller restores again, in full.
func RestoreLazily() RestoreOption { return func(o *restoreOpts) { o.lazy = true } }

// CanRestoreLazily reports whether Restore can restore s on host lazily.
func (r *Runtime) CanRestoreLazily(host string, s Spec) bool {
	h, ok := r.host(host)
	return ok && h.CRIU != "" && s.CRIUConfig != ""
}

// restoreLazily is Restore with RestoreLazily.
func (r *Runtime) restoreLazily(ctx context.Context, host string, s Spec, dir string, o restoreOpts) (err error) {
	h, _ := r.host(host)
	if !r.CanRestoreLazily(host, s) || o.work == "" {
		return fmt.Errorf("restore %s on %s lazily: needs the host's CRIU, the container's CRIU configuration file and a work directory", s.ID, host)
	}
	var t client.Task // set once the copy runs, held (startRestore)
	defer func() {
		if t == nil {
			return
		}
		bg := context.WithoutCancel(ctx)
		if err != nil {
			// Its memory is incomplete, so it must never serve: if it
			// cannot be killed the hold stays, for ClearNetworkLocks to
			// lift once a later restore has replaced it.
			if _, e := t.Delete(bg, client.WithProcessKill); e != nil {
				err = errors.Join(err, fmt.Errorf("kill the incomplete copy (its namespace stays held): %w", e))
				return
			}
		}
		if e := setGuards(bg, host, s.ID, guardHold, false); e != nil {
			err = errors.Join(err, e)
		}
	}()
	start := func(ctx context.Context) error {
		var err error
		t, err = r.startRestore(ctx, host, s, dir, o)
		return err
	}
	return r.lazily(ctx, h, s, dir, o.work, start, nil)
}

// lazily runs start, a restore of spec on h by runc, with lazy-pages in the
// container's CRIU file and a daemon serving the pages of image, and
// returns once every page is in. work is the restore's CRIU work
// directory, where the restore finds the daemon. afterStart, if set, runs
// once start has returned (a test hook). On error the file no longer says
// lazy-pages and neither the daemon nor the restoring CRIU is left
// running; a copy that start did bring up keeps running with its memory
// incomplete, for the caller to kill.
func (r *Runtime) lazily(ctx context.Context, h Host, spec Spec, image, work string, start func(context.Context) error, afterStart func()) error {
	d, err := r.startLazy(ctx, h, spec, image, work)
	if err != nil {
		return err
	}
	started := make(chan struct{})
	aborted := make(chan string, 1)
	go func() { aborted <- stopRestoreOnFault(ctx, d, work, started) }()
	err = start(ctx)
	close(started)
	why := <-aborted
	// Before anything else can dump or restore this container: runc reads
	// the same file on the source.
	if e := stripLazy(spec.CRIUConfig); e != nil {
		err = errors.Join(err, e)
	}
	if err != nil {
		d.kill()
		if why != "" {
			err = fmt.Errorf("%w (%s)", err, why)
		} else if pids := killCRIUIn(work); len(pids) > 0 {
			// The start failed on its own: nothing may still wait for
			// pages when the undo kills this copy.
			err = fmt.Errorf("%w (stopped the restore, criu pids %v)", err, pids)
		}
		// A killed CRIU cannot unmount its cgroup yard, nor kill the
		// tasks it had restored.
		if e := unmountUnder(work); e != nil {
			r.log.Warn("lazy restore: clean up after criu", zap.String("container", spec.ID), zap.Error(e))
		}
		pids, e := killLeftovers(h, spec.ID)
		if len(pids) > 0 {
			err = fmt.Errorf("%w (killed the restore's leftover tasks %v)", err, pids)
		}
		return errors.Join(err, e)
	}
	if afterStart != nil {
		afterStart()
	}
	t0 := time.Now()
	if err := d.wait(ctx); err != nil {
		return err
	}
	r.log.Debug("lazy restore complete", zap.String("container", spec.ID), zap.Duration("after_start", time.Since(t0)))
	return nil
}

// stopRestoreOnFault watches the daemon d while runc restores (until
// started is closed) and, if the daemon dies or the restore nears ctx's
// deadline, stops the restore and says why; it returns "" otherwise.
//
// It stops CRIU, not runc: runc then fails the start itself and undoes its
// own mounts, which it cannot do once the step's deadline has cancelled
// it. CRIU does not end by itself either way. Waiting for pages that never
// come, it hangs. Finding the daemon gone when it reports the restore
// finished, it kills the copy and then stays until it is stopped (with the
// fault test's death noticed a second late, runc returned the moment CRIU
// was stopped). And at the instant the daemon dies CRIU is not always
// where killCRIUIn looks (its work directory), so it is stopped again and
// again until runc returns: a single attempt let a restore hang until the
// step's deadline, after which runc, cancelled, left the source's undo
// unable to restore (TestFaultLazyDaemon).
func stopRestoreOnFault(ctx context.Context, d *lazyDaemon, work string, started <-chan struct{}) string {
	var stall <-chan time.Time
	if dl, ok := ctx.Deadline(); ok {
		t := time.NewTimer(time.Until(dl) - abortMargin(time.Until(dl)))
		defer t.Stop()
		stall = t.C
	}
	why := ""
	select {
	case err := <-d.done:
		d.done <- err
		if err == nil {
			return ""
		}
		why = "lazy-pages daemon died"
	case <-stall:
		why = "restore stalled"
	case <-started:
		return ""
	}
	d.kill()
	pids := killCRIUIn(work)
	tick := time.NewTicker(criuStopInterval)
	defer tick.Stop()
	for {
		select {
		case <-started:
			return fmt.Sprintf("%s; stopped the restore, criu pids %v", why, pids)
		case <-tick.C:
			pids = append(pids, killCRIUIn(work)...)
		}
	}
}

// criuStopInterval is how often a faulted lazy restore's CRIU is looked
// for and stopped until runc returns.
const criuStopInterval = 50 * time.Millisecond

// abortMargin is how long before the step's deadline a stalled lazy
// restore is stopped, leaving runc time to fail and clean up.
func abortMargin(left time.Duration) time.Duration {
	return min(3*time.Second, left/4)
}

// killCRIUIn kills the processes working in dir, a restore's work
// directory, and returns their pids. CRIU runs there (its comm may be its
// loader's, so the directory is what identifies it); the restored tasks
// never do. A restore whose lazy-pages daemon died deadlocks: the restored
// task, dying, waits in its pid namespace for CRIU to reap it, and CRIU
// waits for pages. Killing CRIU breaks that.
func killCRIUIn(dir string) []int {
	want, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var killed []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err != nil || cwd != want {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed = append(killed, pid)
		}
	}
	return killed
}

// lazyConfigLine is added to the container's CRIU configuration while, and
// only while, the destination restores: runc reads the file named by the
// container's org.criu.config annotation on dump and restore alike, and a
// dump with lazy-pages would leave the pages behind a page server.
const lazyConfigLine = "lazy-pages\n"

// lazySocket is where CRIU's restore looks for the daemon: in its work
// directory.
const lazySocket = "lazy-pages.socket"

// lazyDaemon is a running `criu lazy-pages`.
type lazyDaemon struct {
	cmd  *exec.Cmd
	done chan error
	log  string
}

// startLazy adds lazy-pages to the container's CRIU configuration and
// starts the daemon that serves the dump in image, rendezvousing with the
// restore in work. It returns once the daemon listens. On error nothing is
// left behind: the configuration is as it was and no daemon runs.
func (r *Runtime) startLazy(ctx context.Context, h Host, spec Spec, image, work string) (*lazyDaemon, error) {
	if err := addLazy(spec.CRIUConfig); err != nil {
		return nil, err
	}
	d, err := startLazyDaemon(ctx, h.CRIU, image, work)
	if err != nil {
		if e := stripLazy(spec.CRIUConfig); e != nil {
			r.log.Error("lazy restore: put back the criu config", zap.String("container", spec.ID), zap.Error(e))
		}
		return nil, err
	}
	return d, nil
}

func startLazyDaemon(ctx context.Context, criu, image, work string) (*lazyDaemon, error) {
	if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, fmt.Errorf("lazy restore: %w", err)
	}
	sock := filepath.Join(work, lazySocket)
	_ = os.Remove(sock) // a stale socket from a killed daemon would be connected to
	d := &lazyDaemon{done: make(chan error, 1), log: filepath.Join(work, "lazy-pages.log")}
	// Not tied to ctx: the daemon must outlive the step that starts it.
	d.cmd = exec.Command(criu, "lazy-pages", "--images-dir", image, "--work-dir", work, "--log-file", "lazy-pages.log", "-v4")
	// Its own group, so that kill reaches whatever it runs under (a
	// wrapper script, in the tests).
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("lazy restore: start %s lazy-pages: %w", criu, err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	// It listens within a few ms of starting.
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		if _, err := os.Stat(sock); err == nil {
			return d, nil
		}
		select {
		case err := <-d.done:
			d.done <- err
			return nil, fmt.Errorf("lazy restore: daemon exited before listening: %v%s", err, criuLogTail(work, "lazy-pages.log"))
		case <-ctx.Done():
			d.kill()
			return nil, fmt.Errorf("lazy restore: %w", ctx.Err())
		case <-deadline.C:
			d.kill()
			return nil, errors.New("lazy restore: daemon not listening after 5s" + criuLogTail(work, "lazy-pages.log"))
		case <-tick.C:
		}
	}
}

// wait returns once the daemon has copied every page and exited, or fails
// if it exits with an error, or kills it when ctx ends first.
func (d *lazyDaemon) wait(ctx context.Context) error {
	select {
	case err := <-d.done:
		d.done <- err
		if err != nil {
			return fmt.Errorf("lazy restore: daemon failed, memory incomplete: %v%s", err, criuLogTail(filepath.Dir(d.log), "lazy-pages.log"))
		}
		return nil
	case <-ctx.Done():
		d.kill()
		return fmt.Errorf("lazy restore: memory not complete: %w", ctx.Err())
	}
}

// kill stops the daemon (a restore that did not happen, or one given up).
func (d *lazyDaemon) kill() {
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	err := <-d.done
	d.done <- err
}

// addLazy appends lazy-pages to a CRIU configuration file, atomically.
func addLazy(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("lazy restore: %w", err)
	}
	if hasLazy(b) {
		return nil
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	if err := atomicfile.WriteFile(path, append(b, lazyConfigLine...), 0o644); err != nil {
		return fmt.Errorf("lazy restore: %w", err)
	}
	return nil
}

// stripLazy removes what addLazy added. A missing file has nothing to strip.
func stripLazy(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("criu config: %w", err)
	}
	if !hasLazy(b) {
		return nil
	}
	var out [][]byte
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if string(bytes.TrimSpace(line)) != "lazy-pages" {
			out = append(out, line)
		}
	}
	if err := atomicfile.WriteFile(path, bytes.Join(out, nil), 0o644); err != nil {
		return fmt.Errorf("criu config: %w", err)
	}
	return nil
}

func hasLazy(conf []byte) bool {
	for _, line := range bytes.Split(conf, []byte("\n")) {
		if string(bytes.TrimSpace(line)) == "lazy-pages" {
			return true
		}
	}
	return false
}
