// Command testreport reads `go test -json` on stdin, prints the usual test
// output, and ends with one summary line: "N passed, N failed, N skipped".
// With -fail-on-skip it also fails when any test skipped, which make test
// asks for on machines where the doctor says every mode can run: there,
// a skipped integration test would be a test that silently did not run.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
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
	flag.Parse()
	os.Exit(run(os.Stdin, os.Stdout, *failOnSkip))
}

func run(in io.Reader, out io.Writer, failOnSkip bool) int {
	var passed, failed, skipped int
	var skips, fails []string
	buildFailed := false
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
				fmt.Fprint(out, strings.Join(pending[key], ""))
				delete(pending, key)
			} else if ev.Package != "" {
				fails = append(fails, ev.Package)
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
		return 2
	}
	sort.Strings(skips)
	for _, s := range skips {
		fmt.Fprintln(out, "skipped:", s)
	}
	for _, f := range fails {
		fmt.Fprintln(out, "failed:", f)
	}
	fmt.Fprintf(out, "%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	switch {
	case failed > 0 || len(fails) > 0 || buildFailed:
		return 1
	case failOnSkip && skipped > 0:
		fmt.Fprintln(out, "testreport: tests skipped on a machine that the doctor says can run them all")
		return 1
	case passed == 0:
		fmt.Fprintln(out, "testreport: no test ran")
		return 1
	}
	return 0
}
