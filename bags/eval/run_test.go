package eval

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestRunSmall runs the full pipeline with a minimal grid only when asked
// (ESCAPE_EVAL=1): the real evaluation is `escape-sensor eval`.
func TestRunSmall(t *testing.T) {
	if os.Getenv("ESCAPE_EVAL") == "" {
		t.Skip("set ESCAPE_EVAL=1 to run the ADFA-LD pipeline (takes ~1 min)")
	}
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
