package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/escape-mtd/escape/internal/modroot"
	"go.uber.org/zap"
)

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "enter" {
		err = enterMain(os.Args[2:])
	} else {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err = runMain(ctx, os.Args[1:])
		stop()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scenarios:", err)
		os.Exit(1)
	}
}

// Outcome is one scenario's run, kept beside its recording (<name>.json) so
// that -replay-only scores it again.
type Outcome struct {
	Scenario    string    `json:"scenario"`
	Service     string    `json:"service"`
	Covers      []string  `json:"covers"`
	AttackIn    string    `json:"attack_in"`
	Recording   string    `json:"recording"`
	AttackStart int64     `json:"attack_start_unix_ns"`
	AttackEnd   int64     `json:"attack_end_unix_ns"`
	AttackExit  string    `json:"attack_exit"`
	Drops       string    `json:"drops,omitempty"`
	Replay      *Replay   `json:"replay,omitempty"`
	Expect      Expect    `json:"-"`
	Error       string    `json:"error,omitempty"`
	When        time.Time `json:"when"`
}

func runMain(ctx context.Context, args []string) error {
	root, err := modroot.Find()
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("scenarios", flag.ContinueOnError)
	dir := fs.String("scenarios", filepath.Join(root, "tools", "scenarios"), "folder of the scenarios")
	out := fs.String("out", filepath.Join(root, "out", "scenarios"), "folder for the table, recordings and logs")
	sensorBin := fs.String("sensor", filepath.Join(root, "bin", "escape-sensor"), "escape-sensor binary (make build)")
	normal := fs.Duration("normal", 3*time.Minute, "normal phase per scenario, before the attack (the issue asks for 1h per service in all)")
	post := fs.Duration("post", 5*time.Second, "normal load recorded after the attack")
	only := fs.String("only", "", "comma-separated scenario names (default: all)")
	replayOnly := fs.Bool("replay-only", false, "score the recordings already in -out again, without running anything")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *normal < 20*time.Second {
		return fmt.Errorf("-normal %v: want at least 20s (the calibration needs 40 training epochs)", *normal)
	}
	var names []string
	if *only != "" {
		names = strings.Split(*only, ",")
	}
	scs, err := LoadScenarios(*dir, names)
	if err != nil {
		return err
	}
	logCfg := zap.NewDevelopmentConfig()
	logCfg.DisableStacktrace = true
	log, err := logCfg.Build()
	if err != nil {
		return err
	}
	defer log.Sync()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg := LiveConfig{Root: *dir, Out: *out, Sensor: *sensorBin, Self: self, Normal: *normal, Post: *post, Log: log}
	var outcomes []Outcome
	for _, s := range scs {
		o, err := runScenario(ctx, s, cfg, *replayOnly)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			log.Error("scenario failed", zap.String("scenario", s.Name), zap.Error(err))
			o.Error = err.Error()
		}
		outcomes = append(outcomes, o)
	}
	table := RenderTable(outcomes, DefaultReplay())
	if err := atomicfile.WriteFile(filepath.Join(*out, "table.md"), []byte(table), 0o644); err != nil {
		return fmt.Errorf("write the table: %w", err)
	}
	fmt.Print(table)
	var failed []string
	for _, o := range outcomes {
		if o.Error != "" {
			failed = append(failed, o.Scenario)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("scenarios that did not run: %s", strings.Join(failed, ", "))
	}
	return nil
}

// runScenario runs s live (unless replayOnly) and replays its recording.
func runScenario(ctx context.Context, s *Scenario, cfg LiveConfig, replayOnly bool) (Outcome, error) {
	o := Outcome{Scenario: s.Name, Service: s.Service, Covers: s.Covers, AttackIn: s.AttackIn, Expect: s.Expect, When: time.Now().UTC()}
	meta := filepath.Join(cfg.Out, s.Name+".json")
	if replayOnly {
		b, err := os.ReadFile(meta)
		if err != nil {
			return o, fmt.Errorf("replay-only: %w", err)
		}
		if err := json.Unmarshal(b, &o); err != nil {
			return o, fmt.Errorf("replay-only: %s: %w", meta, err)
		}
		o.Expect, o.Replay, o.Error = s.Expect, nil, ""
	} else {
		live, err := RunLive(ctx, s, cfg)
		if err != nil {
			return o, err
		}
		o.Recording, o.AttackStart, o.AttackEnd, o.Drops = live.Recording, live.AttackStart, live.AttackEnd, live.Drops
		o.AttackExit = "0"
		if live.AttackErr != nil {
			o.AttackExit = live.AttackErr.Error()
		}
	}
	rec, err := ReadRecording(ctx, o.Recording)
	if err == nil {
		o.Replay, err = ReplayRecording(ctx, rec, o.AttackStart, DefaultReplay())
	}
	b, jerr := json.MarshalIndent(o, "", "  ")
	if jerr == nil {
		jerr = atomicfile.WriteFile(meta, append(b, '\n'), 0o644)
	}
	return o, errors.Join(err, jerr)
}
