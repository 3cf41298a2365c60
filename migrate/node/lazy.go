package node

import (
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
	"github.com/containerd/errdefs"
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
// The daemon reads the dump from the host's own copy of the image (shared
// storage or a Fetch), so no page depends on the source host. Until it has
// copied the last page the restored task's memory is incomplete, so:
//   - no packet reaches the copy (guardHold: set by Stage for a migration,
//     by Restore itself otherwise) until the daemon has exited cleanly:
//     no client request is ever served by an incomplete copy (what it
//     sends meanwhile is what the dump's sockets held, which the source
//     would send again after an undo);
//   - a daemon that dies or stalls fails the step: CRIU, waiting for pages
//     that will not come, is killed so that runc fails and cleans up, the
//     copy is killed, and the plane reverts (the source restored from the
//     same, intact, dump) or restores again in full;
//   - the step returns only once every page is in, so a plane that crashes
//     before it has the answer undoes rather than finishes.
//
// runc has no option for lazy restore: it reads the container's CRIU
// configuration file, so lazy-pages is in that file during the restore
// only, and out of it before anything else can dump or restore the
// container (and out of every file when the node starts: New).

// restoreLazily runs the restore task t lazily and returns once every page
// is in. A task that Stage created is already held (the stage's guards);
// one that Restore created is held here, and let go once complete. On
// error no copy of the restore is left running: its memory is incomplete,
// so it must never serve; if it cannot be killed, the hold stays, for
// RestoreOptions.ClearLocks to lift once a later restore has replaced it.
func (n *Node) restoreLazily(ctx context.Context, id string, t client.Task, dir, work string, hold bool) (err error) {
	ns := n.ctNetns(id)
	bg := context.WithoutCancel(ctx)
	if hold {
		if err := setGuards(ctx, ns, guardHold, true); err != nil {
			_, _ = t.Delete(bg)
			return err
		}
	}
	started := false
	defer func() {
		if err != nil && started {
			if _, e := t.Delete(bg, client.WithProcessKill); e != nil && !errdefs.IsNotFound(e) {
				err = errors.Join(err, fmt.Errorf("kill the incomplete copy (its namespace stays held): %w", e))
				return
			}
		}
		if hold {
			err = errors.Join(err, setGuards(bg, ns, guardHold, false))
		}
	}()
	start := func(ctx context.Context) error {
		if err := startTask(ctx, t, work); err != nil {
			return err
		}
		started = true
		return nil
	}
	return n.lazily(ctx, id, dir, work, start)
}

// lazily runs start, a restore of container id by runc, with lazy-pages in
// the container's CRIU file and a daemon serving the pages of the dump in
// image, and returns once every page is in. work is the restore's CRIU
// work directory, where the restore finds the daemon. n.afterLazyStart, if
// set, runs once start has returned (a test hook). On error the file no
// longer says lazy-pages and neither the daemon nor the restoring CRIU is
// left running; a copy that start did bring up keeps running with its
// memory incomplete, for the caller to kill.
func (n *Node) lazily(ctx context.Context, id, image, work string, start func(context.Context) error) error {
	conf := n.criuConfig(id)
	d, err := n.startLazy(ctx, id, image, work)
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
	// the same file on every dump.
	if e := stripLazy(conf); e != nil {
		err = errors.Join(err, e)
	}
	if err != nil {
		d.kill()
		if why != "" {
			err = fmt.Errorf("%w (%s)", err, why)
		} else if pids := killCRIUIn(work); len(pids) > 0 {
			// The start failed on its own: nothing may still wait for
			// pages when the caller kills this copy.
			err = fmt.Errorf("%w (stopped the restore, criu pids %v)", err, pids)
		}
		// A killed CRIU cannot unmount its cgroup yard, nor kill the
		// tasks it had restored.
		if e := unmountUnder(work); e != nil {
			n.log.Warn("lazy restore: clean up after criu", zapID(id), zap.Error(e))
		}
		pids, e := n.killLeftovers(id)
		if len(pids) > 0 {
			err = fmt.Errorf("%w (killed the restore's leftover tasks %v)", err, pids)
		}
		return errors.Join(err, e)
	}
	if n.afterLazyStart != nil {
		n.afterLazyStart()
	}
	t0 := time.Now()
	if err := d.wait(ctx); err != nil {
		return err
	}
	n.log.Debug("lazy restore complete", zapID(id), zap.Duration("after_start", time.Since(t0)))
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

// lazy-pages is in the container's CRIU configuration while, and only
// while, it restores: runc reads the file named by the container's
// org.criu.config annotation on dump and restore alike, and a dump with
// lazy-pages would leave the pages behind a page server.

// lazySocket is where CRIU's restore looks for the daemon: in its work
// directory.
const lazySocket = "lazy-pages.socket"

// lazyDaemon is a running `criu lazy-pages`.
type lazyDaemon struct {
	cmd  *exec.Cmd
	done chan error
	log  string
}

// startLazy adds lazy-pages to container id's CRIU configuration and
// starts the daemon that serves the dump in image, rendezvousing with the
// restore in work. It returns once the daemon listens. On error nothing is
// left behind: the configuration is as it was and no daemon runs.
func (n *Node) startLazy(ctx context.Context, id, image, work string) (*lazyDaemon, error) {
	conf := n.criuConfig(id)
	if err := addLazy(conf); err != nil {
		return nil, err
	}
	d, err := startLazyDaemon(ctx, n.cfg.CRIU, image, work)
	if err != nil {
		if e := stripLazy(conf); e != nil {
			n.log.Error("lazy restore: put back the criu config", zapID(id), zap.Error(e))
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
	if err := addOption(path, optLazyPages); err != nil {
		return fmt.Errorf("lazy restore: %w", err)
	}
	return nil
}

// stripLazy removes what addLazy added. A missing file has nothing to strip.
func stripLazy(path string) error {
	_, err := stripOption(path, optLazyPages)
	return err
}

func hasLazy(conf []byte) bool { return hasOption(conf, optLazyPages) }
