package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/escape-mtd/escape/tools/lab"
)

func (d *demo) elapsed() string { return fmt.Sprintf("[%6.1fs]", time.Since(d.start).Seconds()) }

func (d *demo) step(s string) { fmt.Printf("\n\033[1m%s == %s\033[0m\n", d.elapsed(), s) }

func (d *demo) note(format string, a ...any) {
	fmt.Printf("%s    %s\n", d.elapsed(), fmt.Sprintf(format, a...))
}

// cmd runs one of the project's binaries in the foreground.
func (d *demo) cmd(ctx context.Context, name string, args ...string) error {
	c := exec.CommandContext(ctx, filepath.Join(d.bin, name), args...)
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s %v: %w", name, args, err)
	}
	return nil
}

// background starts a long-running binary with its output in log. It is
// stopped with SIGTERM by cleanup, so daemons shut down gracefully.
func (d *demo) background(name, log string, args ...string) error {
	return d.backgroundCmd(exec.Command(filepath.Join(d.bin, name), args...), log)
}

// backgroundCmd is background for a command already built (one that runs
// inside a lab machine).
func (d *demo) backgroundCmd(c *exec.Cmd, log string) error {
	f, err := os.Create(filepath.Join(d.out, log))
	if err != nil {
		return err
	}
	c.Stdout, c.Stderr = f, f
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := c.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", c.Path, err)
	}
	f.Close()
	d.procs = append(d.procs, c)
	return nil
}

// inHost runs a command in the foreground inside a lab machine (a host,
// "plane" or "client").
func (d *demo) inHost(ctx context.Context, where, name string, args ...string) error {
	c := lab.Command(ctx, d.inv, where, name, args...)
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s on %s %v: %w", name, where, args, err)
	}
	return nil
}

// waitFor polls cond until it holds, printing a dot every 2 s so that long
// steps show progress.
func (d *demo) waitFor(ctx context.Context, what string, limit time.Duration, cond func() (bool, error)) error {
	end := time.Now().Add(limit)
	lastDot := time.Now()
	dots := false
	defer func() {
		if dots {
			fmt.Println()
		}
	}()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("%s: not within %v", what, limit)
		}
		if time.Since(lastDot) > 2*time.Second {
			if !dots {
				fmt.Printf("%s    waiting for %s ", d.elapsed(), what)
			}
			fmt.Print(".")
			dots, lastDot = true, time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// cleanup stops what the demo started, newest first, and takes the lab
// down. It runs on every exit, Ctrl-C included.
func (d *demo) cleanup() {
	fmt.Printf("\n%s == cleaning up\n", d.elapsed())
	if d.stopBG != nil {
		d.stopBG()
	}
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		_ = p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
	}
	d.collect() // the daemons have stopped: their files are complete
	if !d.keepLab {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := d.cmd(ctx, "escape-lab", "down"); err != nil {
			fmt.Fprintln(os.Stderr, "lab down:", err)
		}
	}
	fmt.Printf("logs, events and the summary are in %s\n", d.out)
}
