package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/escape-mtd/escape/migrate/node"
	"github.com/escape-mtd/escape/tools/lab"
)

// bare measures the limit: memsrv as a bare process in host h1's network
// and mount namespaces, listening on the host's own address, dumped and
// restored by the host's CRIU directly (through lab.Command, as a shell on
// that machine would), once per sample in out. The process shares the
// host's network namespace, so CRIU locks and restores its connections
// only, as it would a container's.
func bare(ctx context.Context, inv *lab.Inventory, memsrv, lock, work string, size, port int, out []sample) error {
	h := inv.Hosts[0]
	criu := h.CRIU
	if criu == "" {
		criu = "/opt/escape/bin/criu"
	}
	addr := fmt.Sprintf("%s:%d", h.IP, port)
	// Its standard streams are opened inside the host (a /dev/null of the
	// root namespace's mounts would be one CRIU cannot find there).
	cmd := lab.Command(ctx, inv, h.Name, "sh", "-c", `exec </dev/null >/dev/null 2>&1; exec "$0" "$@"`,
		memsrv, "-mem", strconv.Itoa(size), "-listen", fmt.Sprintf(":%d", port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	// nsenter enters mount and network namespaces without forking, and sh
	// execs: the pid is memsrv's.
	pid := cmd.Process.Pid
	defer func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		_ = reap(pid)
	}()
	pr := newProber(inv.Client.Netns, addr)
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
		if b, err := lab.Command(ctx, inv, h.Name, criu, "dump", "-t", strconv.Itoa(pid), "-D", dir,
			"--tcp-established", "--network-lock", lock, "-o", "dump.log").CombinedOutput(); err != nil {
			return fmt.Errorf("dump: %v: %s %s", err, b, tailLog(filepath.Join(dir, "dump.log")))
		}
		t1 := time.Now()
		// Reap it (our child, or reparented to us as subreaper after a
		// restore) so its PID is free for the restore.
		if err := reap(pid); err != nil {
			return err
		}
		if b, err := lab.Command(ctx, inv, h.Name, criu, "restore", "-D", dir, "-d",
			"--tcp-established", "--network-lock", lock, "-o", "restore.log").CombinedOutput(); err != nil {
			return fmt.Errorf("restore: %v: %s %s", err, b, tailLog(filepath.Join(dir, "restore.log")))
		}
		t2 := time.Now()
		s := &out[i].bare
		s.dump, s.restore = t1.Sub(t0), t2.Sub(t1)
		var err error
		if s.criu, err = node.ReadCRIUStats(dir, dir); err != nil {
			return err
		}
		if s.gap, s.resets, err = pr.gap(t0, time.Now()); err != nil {
			return err
		}
		os.RemoveAll(dir)
		fmt.Fprintf(os.Stderr, "  bare rep %d: dump %v restore %v gap %v resets %d\n", i+1, s.dump.Round(time.Millisecond),
			s.restore.Round(time.Millisecond), s.gap.Round(time.Millisecond), s.resets)
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
