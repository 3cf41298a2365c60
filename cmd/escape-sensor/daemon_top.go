package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/escape-mtd/escape/sensor/control"
	"github.com/escape-mtd/escape/sensor/top"
)

func newTopCmd() *cobra.Command {
	var (
		socket   string
		sortKey  string
		once     bool
		interval time.Duration
		width    int
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Live per-container view of the running sensor daemon (root only)",
		Long: `top shows one row per container, refreshed every second: system-call rate,
epoch, mismatches in the last epoch, profile size, state and drops. Keys: n r m
d x s sort by name, rate, mismatches, database, drops, state; q quits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(sortKey) != 1 || !top.ValidSort(rune(sortKey[0])) {
				return fmt.Errorf("--sort %q: want one of n r m d x s", sortKey)
			}
			if interval < 100*time.Millisecond {
				return fmt.Errorf("--interval %v: at least 100ms", interval)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runTop(ctx, socket, rune(sortKey[0]), once, interval, width, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&socket, "socket", control.DefaultPath, "the daemon's control socket")
	f.StringVar(&sortKey, "sort", "r", "initial sort key: n r m d x s")
	f.BoolVar(&once, "once", false, "print two samples one interval apart (for the rate) and exit")
	f.DurationVar(&interval, "interval", time.Second, "refresh interval")
	f.IntVar(&width, "width", 0, "columns (default: the terminal's, at least 80)")
	return cmd
}

func runTop(ctx context.Context, socket string, key rune, once bool, every time.Duration, width int, out io.Writer) error {
	cli, err := control.Dial(ctx, socket)
	if err != nil {
		return err
	}
	defer cli.Close()
	view := top.NewView(key)
	keys := make(chan rune, 8)
	interactive := !once && ttyInput(os.Stdin)
	if interactive {
		restore, err := rawInput(os.Stdin)
		if err != nil {
			return err
		}
		defer restore()
		go readKeys(os.Stdin, keys)
	}
	frame := func(clear bool) error {
		r, err := cli.Do(ctx, control.Request{Op: "rows"})
		if err != nil {
			return err
		}
		w := width
		if w == 0 {
			w = termWidth(os.Stdout)
		}
		s := view.Render(r.Host, r.Time, r.Rows, w)
		if clear {
			s = "\x1b[H\x1b[2J" + s
		}
		_, err = io.WriteString(out, s)
		return err
	}
	if once {
		// The first sample only primes the rates.
		if _, err := cli.Do(ctx, control.Request{Op: "rows"}); err != nil {
			return err
		}
		r, _ := cli.Do(ctx, control.Request{Op: "rows"})
		view.Render(r.Host, r.Time, r.Rows, 80)
		time.Sleep(every)
		return frame(false)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if err := frame(interactive); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case k := <-keys:
			if k == 'q' {
				return nil
			}
			if top.ValidSort(k) {
				view.Sort = k
			}
		case <-tick.C:
		}
	}
}

func ttyInput(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func termWidth(f *os.File) int {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 {
		return 80
	}
	return int(ws.Col)
}

// rawInput turns off line buffering and echo so that single keys arrive.
func rawInput(f *os.File) (func(), error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("terminal: %w", err)
	}
	raw := *old
	raw.Lflag &^= unix.ICANON | unix.ECHO
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, fmt.Errorf("terminal: %w", err)
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

func readKeys(r io.Reader, keys chan<- rune) {
	b := make([]byte, 1)
	for {
		if n, err := r.Read(b); err != nil || n == 0 {
			return
		}
		keys <- rune(b[0])
	}
}
