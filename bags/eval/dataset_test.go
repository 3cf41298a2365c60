package eval

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tinyADFA writes an ADFA-LD-shaped tree with one short trace per listed
// file (paths relative to root).
func tinyADFA(t *testing.T, files ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, f := range files {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("6 5 3 4 6 5 3 4 6 5 3 4 6 5 3 4 6 5\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

var tinyNormal = []string{
	"Training_Data_Master/t.txt",
	"Validation_Data_Master/a.txt", "Validation_Data_Master/b.txt",
	"Validation_Data_Master/c.txt", "Validation_Data_Master/d.txt",
}

// TestLoadADFALayout: the run number of an attack folder decides what model
// selection may see, so a folder without one is refused by name instead of
// being guessed (it used to panic on a folder name without "_").
func TestLoadADFALayout(t *testing.T) {
	ctx := context.Background()
	for _, bad := range []string{
		"Attack_Data_Master/Adduser/x.txt",   // no run number
		"Attack_Data_Master/Adduser_x/x.txt", // not a number
		"Attack_Data_Master/Adduser_0/x.txt", // runs count from 1
		"Attack_Data_Master/_3/x.txt",        // no family
		"Attack_Data_Master/x.txt",           // not in a run folder
		"Attack_Data_Master/Adduser_1/deeper/x.txt",
	} {
		root := tinyADFA(t, append(tinyNormal, bad)...)
		_, err := LoadADFA(ctx, root)
		if err == nil || !strings.Contains(err.Error(), "run folder") || !strings.Contains(err.Error(), filepath.Base(bad)) {
			t.Errorf("%s: want a run-folder error naming the trace, got %v", bad, err)
		}
	}
	root := tinyADFA(t, append(tinyNormal, "Attack_Data_Master/Hydra_FTP_7/x.txt")...)
	d, err := LoadADFA(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	if d.Attack[0].Family != "Hydra_FTP" || attackRun(d.Attack[0]) != 7 {
		t.Fatalf("family %q run %d", d.Attack[0].Family, attackRun(d.Attack[0]))
	}
	few := tinyADFA(t, tinyNormal[0], tinyNormal[1], tinyNormal[2], "Attack_Data_Master/Adduser_1/x.txt")
	if _, err := LoadADFA(ctx, few); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("two validation traces: want an incomplete-dataset error, got %v", err)
	}
}

// TestRunNeedsBothAttackSets: every figure is a dev choice or a held-out
// read, so a data set without one of them is an error, not a panic; with
// both, even a toy data set runs end to end.
func TestRunNeedsBothAttackSets(t *testing.T) {
	ctx := context.Background()
	cfg := DefaultConfig(tinyADFA(t, append(tinyNormal, "Attack_Data_Master/Adduser_1/x.txt")...))
	if _, err := Run(ctx, cfg); err == nil || !strings.Contains(err.Error(), "held-out") {
		t.Fatalf("no held-out runs: want an error, got %v", err)
	}
	cfg = DefaultConfig(tinyADFA(t, append(tinyNormal, "Attack_Data_Master/Adduser_1/x.txt", "Attack_Data_Master/Adduser_6/x.txt")...))
	r, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Dev != 1 || r.Held != 1 || len(r.Variants) != len(AllVariants()) {
		t.Fatalf("dev %d held %d variants %d", r.Dev, r.Held, len(r.Variants))
	}
	if got := ThresholdAtFPR(nil, 0.05); !math.IsNaN(got) || Rate([]float64{1}, got) != 0 {
		t.Fatalf("no normal scores: threshold %v must be NaN and flag nothing", got)
	}
}
