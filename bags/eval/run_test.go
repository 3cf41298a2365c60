package eval

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestRunSmall runs the whole pipeline on ADFA-LD with a minimal grid;
// the full evaluation is `escape-sensor eval`.
func TestRunSmall(t *testing.T) {
	if _, err := os.Stat(filepath.Join(adfaRoot, "Training_Data_Master")); err != nil {
		t.Skipf("ADFA-LD not available: %v", err)
	}
	cfg := DefaultConfig(adfaRoot)
	cfg.Windows = []int{10}
	r, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range r.Variants {
		t.Log(v)
	}
	if err := WriteFigures(r, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	r.WriteMarkdown(os.Stdout)
}
