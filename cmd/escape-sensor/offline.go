package main

import (
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// addOfflineCommands registers train, detect, eval and profile (owned by the
// bags work): the BoSC engine over recorded or third-party traces.
func addOfflineCommands(root *cobra.Command) {
	root.AddCommand(newTrainCmd(), newDetectCmd(), newEvalCmd(), newEvalOnlineCmd(), newProfileCmd())
}

// offlineLogger logs to stderr so that stdout carries only results.
func offlineLogger(verbose bool) *zap.Logger {
	cfg := zap.NewDevelopmentConfig()
	cfg.DisableStacktrace = true
	cfg.Level = zap.NewAtomicLevelAt(zapcore.InfoLevel)
	if verbose {
		cfg.Level = zap.NewAtomicLevelAt(zapcore.DebugLevel)
	}
	l, err := cfg.Build()
	if err != nil {
		return zap.NewNop()
	}
	return l
}
