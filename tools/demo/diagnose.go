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
	names := []string{"audit.jsonl", "plane.log"}
	agents, _ := filepath.Glob(filepath.Join(d.out, "agent-*.log"))
	for _, a := range agents {
		names = append(names, filepath.Base(a))
	}
	for _, name := range append(names, "client.jsonl", "client.log") {
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

// collect copies what the lab's machines wrote (the plane's audit log,
// every host's sensor events and agent log) into the demo's output, so
// they outlive the lab.
func (d *demo) collect() {
	if d.inv == nil {
		return
	}
	copyFile := func(from, to string) {
		if b, err := os.ReadFile(from); err == nil {
			_ = os.WriteFile(filepath.Join(d.out, to), b, 0o644)
		}
	}
	copyFile(filepath.Join(d.inv.Plane.LogDir, "audit.jsonl"), "audit.jsonl")
	for _, h := range d.inv.Hosts {
		copyFile(filepath.Join(h.LogDir, "events.jsonl"), "events-"+h.Name+".jsonl")
		copyFile(h.AgentLog, "agent-"+h.Name+".log")
	}
}
