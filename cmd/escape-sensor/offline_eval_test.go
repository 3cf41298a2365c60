package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// toyADFA is the smallest tree eval accepts: training, four validation
// traces, and one dev and one held-out attack run.
func toyADFA(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, f := range []string{
		"Training_Data_Master/t.txt",
		"Validation_Data_Master/a.txt", "Validation_Data_Master/b.txt",
		"Validation_Data_Master/c.txt", "Validation_Data_Master/d.txt",
		"Attack_Data_Master/Adduser_1/x.txt", "Attack_Data_Master/Adduser_6/x.txt",
	} {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("6 5 3 4 6 5 3 4 6 5 3 4 6 5\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func runEval(args ...string) (string, error) {
	c := newEvalCmd()
	var out bytes.Buffer
	c.SetOut(&out)
	c.SetErr(&out)
	c.SetArgs(args)
	err := c.ExecuteContext(context.Background())
	return out.String(), err
}

// TestEvalCommand: the markdown file gets exactly the report printed, the
// fold-out check appears when asked for, and bad options fail without
// touching an earlier report.
func TestEvalCommand(t *testing.T) {
	root := toyADFA(t)
	md := filepath.Join(t.TempDir(), "report.md")
	out, err := runEval("--adfa", root, "--figures", "", "--markdown", md, "--fold-check", "2", "--variants", "bosc-frac,knn-bosc+A-loo")
	if err != nil {
		t.Fatalf("eval: %v\n%s", err, out)
	}
	file, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out, string(file)) || !strings.Contains(string(file), "| knn-bosc+A-loo |") || !strings.Contains(string(file), "FOLD-OUT THRESHOLD CHECK") {
		t.Fatalf("report file does not match the printed report or lacks a table:\n%s", file)
	}
	for _, bad := range [][]string{
		{"--fold-check", "1"},
		{"--variants", "nope"},
		{"--adfa", filepath.Join(root, "missing")},
	} {
		args := append([]string{"--adfa", root, "--figures", "", "--markdown", md}, bad...)
		if _, err := runEval(args...); err == nil {
			t.Errorf("%v: want an error", bad)
		}
		if after, _ := os.ReadFile(md); !bytes.Equal(after, file) {
			t.Errorf("%v: the earlier report changed", bad)
		}
	}
}
