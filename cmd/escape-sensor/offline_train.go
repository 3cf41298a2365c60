package main

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/escape-mtd/escape/bags"
	"github.com/escape-mtd/escape/bags/syscalls"
	"github.com/escape-mtd/escape/bags/trace"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
)

// traceFlags are shared by train and detect.
type traceFlags struct {
	format  string
	arch    string
	lenient bool
	verbose bool
	timing  timing
}

func (f *traceFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.format, "format", "auto", "trace format: auto, adfa, sysdig, strace, rec")
	c.Flags().StringVar(&f.arch, "arch", "", "syscall arch of text traces (default: i386 for adfa, x86_64 otherwise)")
	c.Flags().BoolVar(&f.lenient, "lenient", false, "skip malformed or overlong lines instead of failing")
	c.Flags().BoolVarP(&f.verbose, "verbose", "v", false, "debug logging")
	c.Flags().DurationVar(&f.timing.flush, "flush", 0, "also close an epoch this long after its first call, as the live sensor does (needs stamped traces)")
	c.Flags().DurationVar(&f.timing.from, "from", 0, "use only the epochs that start this long or later after each trace's first call")
	c.Flags().DurationVar(&f.timing.until, "until", 0, "stop each trace this long after its first call (0: at its end)")
}

// expand turns files and directories into a sorted list of files.
func expand(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		err := filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() {
				out = append(out, p)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list traces: %w", err)
		}
	}
	sort.Strings(out)
	return out, nil
}

// openTrace opens one trace file with the flags' format and arch.
func openTrace(path string, tf *traceFlags) (trace.Reader, io.Closer, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	opts := []trace.Option{trace.WithLenient(tf.lenient)}
	if tf.arch != "" {
		a, err := syscalls.ParseArch(tf.arch)
		if err != nil {
			fh.Close()
			return nil, nil, err
		}
		opts = append(opts, trace.WithArch(a))
	}
	r, err := trace.NewReader(fh, trace.Format(tf.format), opts...)
	if err != nil {
		fh.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, fh, nil
}

func newTrainCmd() *cobra.Command {
	var tf traceFlags
	var out, workload string
	var window, epoch, autoStop, maxBags int
	var threshold uint64
	c := &cobra.Command{
		Use:   "train [flags] TRACE|DIR...",
		Short: "Learn a BoSC profile from normal traces (each file is one stream)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			log := offlineLogger(tf.verbose)
			defer log.Sync()
			files, err := expand(args)
			if err != nil {
				return err
			}
			var p *bags.Profile
			x, err := bags.NewWindower(window, epoch)
			if err != nil {
				return err
			}
			for _, f := range files {
				r, cl, err := openTrace(f, &tf)
				if err != nil {
					return fmt.Errorf("train: %w", err)
				}
				if p == nil { // the first trace fixes the profile's arch
					p, err = bags.New(bags.WithWindow(window), bags.WithEpoch(epoch), bags.WithThreshold(threshold),
						bags.WithAutoStop(autoStop), bags.WithMaxBags(maxBags), bags.WithWorkload(workload),
						bags.WithArch(r.Meta().Arch.String()), bags.WithLogger(log))
					if err != nil {
						cl.Close()
						return err
					}
				}
				if a := r.Meta().Arch.String(); a != p.Arch() {
					cl.Close()
					return fmt.Errorf("train: %s is %s, profile is %s", f, a, p.Arch())
				}
				err = feed(c.Context(), r, x, tf.timing, func(e bags.Epoch) error { _, err := p.Train(e); return err })
				cl.Close()
				if err != nil {
					return fmt.Errorf("train on %s: %w", f, err)
				}
				log.Debug("trained", zap.String("file", f), zap.Int("bags", p.Stats().Bags))
			}
			if p == nil {
				return fmt.Errorf("train: no trace held a complete epoch or window")
			}
			if err := p.SaveFile(out); err != nil {
				return err
			}
			s := p.Stats()
			fmt.Fprintf(c.OutOrStdout(), "profile %s: %d files, %d windows, %d epochs, %d bags, overflow %d, auto-stopped %v\n",
				out, len(files), s.TrainedWindows, s.TrainedEpochs, s.Bags, s.OverflowBags, s.Stopped)
			return nil
		},
	}
	tf.add(c)
	c.Flags().StringVarP(&out, "out", "o", "profile.bosc", "profile file to write (atomically)")
	c.Flags().StringVar(&workload, "workload", "", "workload name stored in the profile")
	c.Flags().IntVarP(&window, "window", "w", bags.DefaultWindow, "window size W")
	c.Flags().IntVarP(&epoch, "epoch", "e", bags.DefaultEpoch, "epoch length E in calls")
	c.Flags().Uint64VarP(&threshold, "threshold", "t", bags.DefaultThreshold, "mismatch threshold T stored with the profile")
	c.Flags().IntVar(&autoStop, "auto-stop", 0, "stop once the database is unchanged for N epochs (0: off)")
	c.Flags().IntVar(&maxBags, "max-bags", bags.DefaultMaxBags, "cap on distinct bags (overflow is counted)")
	return c
}
