package main

import (
	"bytes"
	"strings"
	"testing"
)

func run(args ...string) (string, error) {
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestSimulateCommand(t *testing.T) {
	out, err := run("simulate", "--v", "20", "--n", "3", "--td", "0.5", "--trials", "200", "--horizon", "20", "--migrate-every", "2", "--policy", "guided")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "f(td)=0.3935") || !strings.Contains(out, "\n20 ") {
		t.Errorf("unexpected output:\n%s", out)
	}
}

func TestBadInputs(t *testing.T) {
	for _, args := range [][]string{
		{"simulate", "--v", "20", "--n", "30"},
		{"simulate", "--growth", "cubic"},
		{"simulate", "--interp", "rho=sideways"},
		{"simulate", "--td", "-1"},
	} {
		if _, err := run(args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestVersion(t *testing.T) {
	out, err := run("--version")
	if err != nil || !strings.Contains(out, "dev") {
		t.Errorf("version: %q %v", out, err)
	}
}
