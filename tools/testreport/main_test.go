package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunCountsAndFailsOnSkip(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:9: lab unavailable: not root\n"}`,
		`{"Action":"output","Package":"p","Test":"TestB","Output":"--- SKIP: TestB (0.00s)\n"}`,
		`{"Action":"skip","Package":"p","Test":"TestB"}`,
		`{"Action":"output","Package":"p","Output":"ok  \tp\t0.1s\n"}`,
		`{"Action":"pass","Package":"p"}`,
	}, "\n")
	var out bytes.Buffer
	if code := run(strings.NewReader(in), &out, false); code != 0 {
		t.Fatalf("exit %d without -fail-on-skip:\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), "1 passed, 0 failed, 1 skipped\n") {
		t.Errorf("no summary line in:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "skipped: p TestB: b_test.go:9: lab unavailable: not root") {
		t.Errorf("skip reason not shown:\n%s", out.String())
	}
	if strings.Contains(out.String(), "=== RUN") {
		t.Errorf("a passing test's output leaked:\n%s", out.String())
	}
	out.Reset()
	if code := run(strings.NewReader(in), &out, true); code == 0 {
		t.Error("a skip passed under -fail-on-skip")
	}
}

func TestRunFailures(t *testing.T) {
	for name, in := range map[string]string{
		"test failed":  `{"Action":"output","Package":"p","Test":"T","Output":"boom\n"}` + "\n" + `{"Action":"fail","Package":"p","Test":"T"}`,
		"build failed": "# p\n./x.go:1: syntax error\n" + `{"Action":"fail","Package":"p"}`,
		"nothing ran":  `{"Action":"pass","Package":"p"}`,
	} {
		var out bytes.Buffer
		if code := run(strings.NewReader(in), &out, false); code == 0 {
			t.Errorf("%s: exit 0:\n%s", name, out.String())
		}
	}
	var out bytes.Buffer
	run(strings.NewReader(`{"Action":"output","Package":"p","Test":"T","Output":"boom\n"}`+"\n"+`{"Action":"fail","Package":"p","Test":"T"}`), &out, false)
	if !strings.Contains(out.String(), "boom") {
		t.Errorf("a failing test's output was hidden:\n%s", out.String())
	}
}

func TestReportPicksFailedLeavesToRerun(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"pass","Package":"a","Test":"TestOK"}`,
		`{"Action":"fail","Package":"a","Test":"TestLab/commit-leases lapsed"}`,
		`{"Action":"pass","Package":"a","Test":"TestLab/restore"}`,
		`{"Action":"fail","Package":"a","Test":"TestLab"}`,
		`{"Action":"fail","Package":"a"}`,
		`{"Action":"fail","Package":"b","Test":"TestRace.x"}`,
		`{"Action":"fail","Package":"b"}`,
	}, "\n")
	var out bytes.Buffer
	code, rerun := report(strings.NewReader(in), &out, false)
	want := []rerunTarget{{"a", `^TestLab$/^commit-leases lapsed$`}, {"b", `^TestRace\.x$`}}
	if code == 0 || len(rerun) != len(want) {
		t.Fatalf("exit %d, rerun %q; want a failure and %q", code, rerun, want)
	}
	for i := range want {
		if rerun[i] != want[i] {
			t.Errorf("rerun[%d] = %q, want %q", i, rerun[i], want[i])
		}
	}
}

func TestReportRerunsNothingAfterAFailureOutsideTests(t *testing.T) {
	for name, in := range map[string]string{
		"a package failed with no failed test": `{"Action":"fail","Package":"a","Test":"T"}` + "\n" +
			`{"Action":"fail","Package":"a"}` + "\n" + `{"Action":"fail","Package":"b"}`,
		"build failed": "# p\n./x.go:1: syntax error\n" + `{"Action":"fail","Package":"p","Test":"T"}`,
		"timed out": `{"Action":"output","Package":"p","Test":"T","Output":"panic: test timed out after 40m0s\n"}` + "\n" +
			`{"Action":"fail","Package":"p","Test":"T"}`,
	} {
		var out bytes.Buffer
		if code, rerun := report(strings.NewReader(in), &out, false); code == 0 || rerun != nil {
			t.Errorf("%s: exit %d, rerun %q; want a failure and nothing to rerun", name, code, rerun)
		}
	}
}

func TestSummaryRepeatsTheAssertions(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"output","Package":"p","Test":"TestX","Output":"=== RUN   TestX\n"}`,
		`{"Action":"output","Package":"p","Test":"TestX","Output":"    logger.go:146: 2026-12-03T13:16:18Z\tINFO\tstep\n"}`,
		`{"Action":"output","Package":"p","Test":"TestX","Output":"    x_test.go:42: recovered: reverted, want migrated\n"}`,
		`{"Action":"output","Package":"p","Test":"TestX","Output":"--- FAIL: TestX (1.00s)\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestX"}`,
	}, "\n")
	var out bytes.Buffer
	report(strings.NewReader(in), &out, false)
	summary := out.String()[strings.Index(out.String(), "failed: p TestX"):]
	if !strings.Contains(summary, "    > x_test.go:42: recovered: reverted, want migrated\n") || strings.Contains(summary, "logger.go") {
		t.Errorf("summary without the assertion, or with log lines:\n%s", summary)
	}
}
