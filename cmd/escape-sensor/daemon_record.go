package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/escape-mtd/escape/bags/syscalls"
	"github.com/escape-mtd/escape/bags/trace"
	"github.com/escape-mtd/escape/sensor"
)

func newRecordCmd() *cobra.Command {
	var (
		cgroup, out, id, workload string
		count                     uint64
		dur                       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "record",
		Short: "Record one cgroup's raw system-call stream to an ESCAPE recording (for offline training)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cgroup == "" || out == "" {
				return errors.New("--cgroup DIR and --out FILE are required")
			}
			if count == 0 && dur <= 0 {
				return errors.New("give --count N or --duration D (or both) to bound the recording")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if dur > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, dur)
				defer cancel()
			}
			n, drops, err := record(ctx, cgroup, out, id, workload, count)
			fmt.Fprintf(cmd.ErrOrStderr(), "recorded %d calls to %s (%d lost to a full ring)\n", n, out, drops)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cgroup, "cgroup", "", "cgroup2 directory of the container (e.g. /sys/fs/cgroup/unified/escape/h1/ID)")
	f.StringVar(&out, "out", "", "recording file to write")
	f.StringVar(&id, "container", "", "container id stored in the recording")
	f.StringVar(&workload, "workload", "", "workload (profile key) stored in the recording")
	f.Uint64Var(&count, "count", 0, "stop after this many calls")
	f.DurationVar(&dur, "duration", 0, "stop after this long")
	return cmd
}

func record(ctx context.Context, dir, out, id, workload string, count uint64) (uint64, uint64, error) {
	cg, err := sensor.CgroupID(dir)
	if err != nil {
		return 0, 0, err
	}
	st, err := sensor.LoadStreamer(0)
	if err != nil {
		return 0, 0, err
	}
	defer st.Close()
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, 0, fmt.Errorf("record: %w", err)
	}
	defer f.Close()
	host, _ := os.Hostname()
	// The kernel stamps calls with CLOCK_MONOTONIC; the recording keeps Unix
	// ns, so a call's time reads against logs and events.
	var mono unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		return 0, 0, fmt.Errorf("record: monotonic clock: %w", err)
	}
	start := time.Now().UnixNano()
	toUnix := start - mono.Nano()
	w, err := trace.NewWriter(f, trace.Meta{Arch: syscalls.X86_64, ContainerID: id, Workload: workload, Host: host,
		StartNS: start}, trace.WithTIDs(true), trace.WithTimestamps(true))
	if err != nil {
		return 0, 0, fmt.Errorf("record: %w", err)
	}
	if err := st.Watch(cg); err != nil {
		return 0, 0, err
	}
	var rec ringbuf.Record
	var n uint64
	for ctx.Err() == nil && (count == 0 || n < count) {
		c, err := st.Read(time.Now().Add(100*time.Millisecond), &rec)
		if errors.Is(err, sensor.ErrTimeout) {
			continue
		}
		if err != nil {
			return n, 0, err
		}
		if err := w.Write(trace.Event{Nr: c.Nr, TID: c.TID, TS: int64(c.TS) + toUnix}); err != nil {
			return n, 0, fmt.Errorf("record: %w", err)
		}
		n++
	}
	drops, _ := st.Drops(cg)
	if err := st.Unwatch(cg); err != nil {
		return n, drops, err
	}
	if err := w.Close(); err != nil {
		return n, drops, fmt.Errorf("record: %w", err)
	}
	if drops > 0 {
		return n, drops, fmt.Errorf("record: %d calls lost to a full ring buffer; the recording has gaps", drops)
	}
	return n, drops, f.Sync()
}
