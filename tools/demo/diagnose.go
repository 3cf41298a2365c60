package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// diagnoseTail is how much of each log a failed demo prints: CI shows only
// the demo's own output, so the cause has to be in it, not just in out/.
const (
	diagnoseLines   = 15
	diagnoseLineMax = 400
)

// diagnose writes the failure and the tail of every log the demo keeps to w,
// so a failure in CI explains itself without the out/ directory.
func (d *demo) diagnose(w io.Writer, err error) {
	fmt.Fprintf(w, "\ndemo failed: %v\n", err)
	for _, name := range []string{"audit.jsonl", "plane.log", "sensor.log", "client.jsonl", "client.log"} {
		lines, rerr := tailLines(filepath.Join(d.out, name), diagnoseLines)
		if rerr != nil || len(lines) == 0 {
			continue
		}
		fmt.Fprintf(w, "--- last %d lines of %s\n", len(lines), filepath.Join(d.out, name))
		for _, l := range lines {
			if len(l) > diagnoseLineMax {
				l = append(l[:diagnoseLineMax:diagnoseLineMax], "…"...)
			}
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
}

// tailLines returns the last n lines of path. The demo's logs are small (a
// few MiB at most), so reading the whole file is fine.
func tailLines(path string, n int) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) == 1 && len(lines[0]) == 0 {
		return nil, nil
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines, nil
}
