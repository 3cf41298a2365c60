package eval

import (
	"context"
	"os"
	"testing"
)

// TestRunSmall runs the whole pipeline on ADFA-LD with a minimal grid;
// the full evaluation is `escape-sensor eval`.
func TestRunSmall(t *testing.T) {
	root := adfaRoot(t)
	cfg := DefaultConfig(root)
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
