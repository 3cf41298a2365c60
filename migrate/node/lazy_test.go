package node

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestLazyConfigLineComesAndGoes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "criu.conf")
	orig := "tcp-established\nexternal mnt[/proc/acpi]:escape-mask-0\n"
	if err := os.WriteFile(path, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // adding twice adds once
		if err := addLazy(path); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(path)
	if string(b) != orig+"lazy-pages\n" {
		t.Fatalf("with lazy-pages:\n%q", b)
	}
	if err := stripLazy(path); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != orig {
		t.Fatalf("after strip:\n%q, want\n%q", b, orig)
	}
	// A file without a final newline keeps its last option intact.
	if err := os.WriteFile(path, []byte("tcp-established"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := addLazy(path); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "tcp-established\nlazy-pages\n" {
		t.Fatalf("appended to an unterminated file: %q", b)
	}
	// Only the exact option goes: not a comment or another option naming it.
	keep := "# lazy-pages is added during restores\nlazy-pages-x\n"
	if err := os.WriteFile(path, []byte(keep+"  lazy-pages  \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := stripLazy(path); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != keep {
		t.Fatalf("strip removed too much or too little: %q", b)
	}
	// Missing file: nothing to strip; nothing to add to.
	missing := filepath.Join(t.TempDir(), "none")
	if err := stripLazy(missing); err != nil {
		t.Fatalf("strip of a missing file: %v", err)
	}
	if err := addLazy(missing); err == nil {
		t.Fatal("lazy-pages added to a file that does not exist")
	}
}

func TestGuardRules(t *testing.T) {
	if n := len(guardResets.rules()); n != 1 {
		t.Fatalf("reset guard: %d rules", n)
	}
	all := (guardResets | guardHold).rules()
	if len(all) != 3 {
		t.Fatalf("reset guard and hold: %d rules", len(all))
	}
	// The hold drops what comes in, never loopback; of what goes out, only
	// FINs, and never loopback's. What the restored sockets send passes.
	in, out := all[1], all[2]
	if in[0] != "INPUT" || !slices.Contains(in, "lo") || !slices.Contains(in, "!") || in[len(in)-1] != "DROP" {
		t.Fatalf("hold rule %v", in)
	}
	flags := slices.Index(out, "--tcp-flags")
	if out[0] != "OUTPUT" || !slices.Contains(out, "lo") || !slices.Contains(out, "!") || out[len(out)-1] != "DROP" ||
		flags < 0 || flags+2 >= len(out) || out[flags+1] != "FIN" || out[flags+2] != "FIN" {
		t.Fatalf("hold's FIN rule %v", out)
	}
}

func TestAbortMarginLeavesRuncTime(t *testing.T) {
	for _, left := range []time.Duration{time.Second, 8 * time.Second, 2 * time.Minute} {
		m := abortMargin(left)
		if m <= 0 || m > 3*time.Second || m > left/4 {
			t.Fatalf("margin %v for %v left", m, left)
		}
	}
}
