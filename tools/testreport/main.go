// Command testreport reads `go test -json` on stdin, prints the usual test
// output, and ends with one summary line: "N passed, N failed, N skipped".
// With -fail-on-skip it also fails when any test skipped, which make test
// asks for on machines where the doctor says every mode can run: there,
// a skipped integration test would be a test that silently did not run.
//
// With -rerun FILE it writes the failed tests that may be run again, one
// "package<TAB>-run pattern" per line, for make test to rerun each once:
// the lab tests are timing-bound on a shared two-core machine, and one
// rerun tells a flake from a failure. make test names every test that
// passed only on its rerun as FLAKY. The file stays empty, and nothing is
// rerun, when the build failed, when a package failed outside any test (a
// panic, a timeout), or when more than -rerun-max tests failed: those are
// failures, not flakes.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

func main() {
	failOnSkip := flag.Bool("fail-on-skip", false, "exit non-zero if any test skipped")
	rerunFile := flag.String("rerun", "", "write the failed tests that may be rerun to this file")
	rerunMax := flag.Int("rerun-max", 3, "more failed tests than this are not rerun")
	flag.Parse()
	code, rerun := report(os.Stdin, os.Stdout, *failOnSkip)
	if *rerunFile != "" {
		if len(rerun) > *rerunMax {
			fmt.Printf("testreport: %d tests failed, more than %d: not rerun\n", len(rerun), *rerunMax)
			rerun = nil
		}
		var b strings.Builder
		for _, r := range rerun {
			fmt.Fprintf(&b, "%s\t%s\n", r.pkg, r.pattern)
		}
		if err := os.WriteFile(*rerunFile, []byte(b.String()), 0o644); err != nil {
			fmt.Println("testreport:", err)
			os.Exit(2)
		}
	}
	os.Exit(code)
}

func run(in io.Reader, out io.Writer, failOnSkip bool) int {
	code, _ := report(in, out, failOnSkip)
	return code
}

// assertionLine is how testing prints t.Error and t.Fatal: indented
// "file_test.go:LINE: message".
var assertionLine = regexp.MustCompile(`^\s+\S+_test\.go:\d+: `)

// assertions returns up to the last 5 assertion lines of a test's output,
// each cut to 400 bytes.
func assertions(output []string) []string {
	var lines []string
	for _, chunk := range output {
		for _, l := range strings.Split(chunk, "\n") {
			if assertionLine.MatchString(l) {
				l = strings.TrimSpace(l)
				if len(l) > 400 {
					l = l[:400] + "…"
				}
				lines = append(lines, l)
			}
		}
	}
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return lines
}

// rerunTarget is one failed test to run again: its package and a -run
// pattern matching it alone.
type rerunTarget struct{ pkg, pattern string }

// runPattern anchors each level of a test's name, so "TestA/b" runs
// TestA's subtest b and no other test or subtest.
func runPattern(test string) string {
	parts := strings.Split(test, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// rerunTargets picks, from the failed tests, the leaves: a parent that
// failed only through its subtests is rerun through them. It returns nil
// when a package failed with no failed test of its own: nothing tells
// what to rerun.
func rerunTargets(failedTests map[string][]string, failedPkgs []string) []rerunTarget {
	for _, pkg := range failedPkgs {
		if len(failedTests[pkg]) == 0 {
			return nil
		}
	}
	var out []rerunTarget
	pkgs := make([]string, 0, len(failedTests))
	for pkg := range failedTests {
		pkgs = append(pkgs, pkg)
	}
	sort.Strings(pkgs)
	for _, pkg := range pkgs {
		tests := failedTests[pkg]
		sort.Strings(tests)
		for _, t := range tests {
			leaf := true
			for _, u := range tests {
				if strings.HasPrefix(u, t+"/") {
					leaf = false
					break
				}
			}
			if leaf {
				out = append(out, rerunTarget{pkg, runPattern(t)})
			}
		}
	}
	return out
}

func report(in io.Reader, out io.Writer, failOnSkip bool) (int, []rerunTarget) {
	var passed, failed, skipped int
	var skips, fails, failedPkgs []string
	failedTests := map[string][]string{}
	why := map[string][]string{} // a failed test's own assertion lines
	buildFailed, timedOut := false, false
	// A test's output is shown only if it fails (or, for a skip, its last
	// line, which says why): passing tests stay quiet, as without -v.
	pending := map[string][]string{}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			// go test prints build errors as plain text, not JSON.
			fmt.Fprintln(out, sc.Text())
			buildFailed = true
			continue
		}
		if strings.HasPrefix(ev.Output, "panic: test timed out") {
			// The suite ran out of time: rerunning would only run out of
			// the CI's too.
			timedOut = true
		}
		switch ev.Action {
		case "output":
			if ev.Test != "" {
				key := ev.Package + " " + ev.Test
				pending[key] = append(pending[key], ev.Output)
			} else if ev.Output != "PASS\n" && !strings.HasPrefix(ev.Output, "=== ") {
				fmt.Fprint(out, ev.Output)
			}
		case "pass":
			if ev.Test != "" {
				passed++
				delete(pending, ev.Package+" "+ev.Test)
			}
		case "fail":
			if ev.Test != "" {
				key := ev.Package + " " + ev.Test
				failed++
				fails = append(fails, key)
				failedTests[ev.Package] = append(failedTests[ev.Package], ev.Test)
				why[key] = assertions(pending[key])
				fmt.Fprint(out, strings.Join(pending[key], ""))
				delete(pending, key)
			} else if ev.Package != "" {
				fails = append(fails, ev.Package)
				failedPkgs = append(failedPkgs, ev.Package)
			}
		case "skip":
			if ev.Test != "" {
				key := ev.Package + " " + ev.Test
				skipped++
				reason := pending[key]
				why := ""
				for i := len(reason) - 1; i >= 0 && why == ""; i-- {
					if l := strings.TrimSpace(reason[i]); l != "" && !strings.HasPrefix(l, "--- SKIP") {
						why = l
					}
				}
				skips = append(skips, key+": "+why)
				delete(pending, key)
			}
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(out, "testreport: read:", err)
		return 2, nil
	}
	sort.Strings(skips)
	for _, s := range skips {
		fmt.Fprintln(out, "skipped:", s)
	}
	// The summary repeats each failure's assertions: a long test's log can
	// push them out of a CI excerpt.
	for _, f := range fails {
		fmt.Fprintln(out, "failed:", f)
		for _, l := range why[f] {
			fmt.Fprintln(out, "    >", l)
		}
	}
	fmt.Fprintf(out, "%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	switch {
	case buildFailed || timedOut:
		return 1, nil
	case failed > 0 || len(fails) > 0:
		return 1, rerunTargets(failedTests, failedPkgs)
	case failOnSkip && skipped > 0:
		fmt.Fprintln(out, "testreport: tests skipped on a machine that the doctor says can run them all")
		return 1, nil
	case passed == 0:
		fmt.Fprintln(out, "testreport: no test ran")
		return 1, nil
	}
	return 0, nil
}
