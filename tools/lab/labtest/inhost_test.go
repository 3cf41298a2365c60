package labtest

import "testing"

// The child runs exactly the parent's test, a subtest too, and the parent
// accepts only the child's PASS line of that test.
func TestInHostSelectsOneTest(t *testing.T) {
	if got, want := runPattern("TestA/b_c"), "^TestA$/^b_c$"; got != want {
		t.Fatalf("runPattern = %q, want %q", got, want)
	}
	if got := runPattern("TestA+"); got != `^TestA\+$` {
		t.Fatalf("runPattern of a name with a metacharacter = %q", got)
	}
	pass := passLine("TestA/b")
	for line, want := range map[string]bool{
		"    --- PASS: TestA/b (0.10s)":  true,
		"--- PASS: TestA/b (1.00s)":      true,
		"    --- PASS: TestA/bc (0.10s)": false,
		"--- FAIL: TestA/b (0.10s)":      false,
		"--- PASS: TestA (0.10s)":        false,
	} {
		if pass.MatchString(line) != want {
			t.Errorf("%q matched %v, want %v", line, !want, want)
		}
	}
}
