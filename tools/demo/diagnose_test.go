package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDiagnosePrintsTheTailOfEachLog(t *testing.T) {
	d := &demo{out: t.TempDir()}
	var plane strings.Builder
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&plane, "plane line %d\n", i)
	}
	long := strings.Repeat("x", 1000)
	files := map[string]string{
		"plane.log":   plane.String(),
		"audit.jsonl": `{"kind":"decision"}` + "\n" + long + "\n",
		"sensor.log":  "",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(d.out, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var w strings.Builder
	d.diagnose(&w, errors.New("the migration reverted"))
	got := w.String()
	for _, want := range []string{
		"demo failed: the migration reverted",
		"last 15 lines of " + filepath.Join(d.out, "plane.log"),
		"plane line 26\n", "plane line 40\n",
		"last 2 lines of " + filepath.Join(d.out, "audit.jsonl"),
		strings.Repeat("x", diagnoseLineMax) + "…",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("diagnosis lacks %q:\n%s", want, got)
		}
	}
	for _, absent := range []string{"plane line 25\n", strings.Repeat("x", diagnoseLineMax+1), "sensor.log", "client.jsonl"} {
		if strings.Contains(got, absent) {
			t.Errorf("diagnosis has %q, which it should leave out:\n%s", absent, got)
		}
	}
}
