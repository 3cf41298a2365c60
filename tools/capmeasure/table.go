package capmeasure

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Row is one capability of the table in docs/operations.md.
type Row struct {
	Cap   string // setpriv's name: sys_admin
	Start bool   // in the bounding set the daemon starts under
	Kept  bool   // kept after the BPF load
	Step  string // the first step that fails without it
	Err   string
}

// TableHeading is the heading of the section whose first table is the
// measured one.
const TableHeading = "## Capabilities"

// ReadTable reads the measured table from the operations guide at path:
// the first table after TableHeading whose first column names a
// capability (`CAP_...`).
func ReadTable(path string) ([]Row, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("capability table: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	in, started := false, false
	var rows []Row
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			if in && started {
				break
			}
			in = line == TableHeading
			continue
		}
		if !in {
			continue
		}
		if !strings.HasPrefix(line, "| `CAP_") {
			if started && !strings.HasPrefix(line, "|") {
				break
			}
			continue
		}
		started = true
		cells := splitRow(line)
		if len(cells) != 4 {
			return nil, fmt.Errorf("capability table: %q: want 4 cells", line)
		}
		step, msg, _ := strings.Cut(cells[3], ": ")
		rows = append(rows, Row{Cap: strings.ToLower(strings.TrimPrefix(strings.Trim(cells[0], "`"), "CAP_")),
			Start: cells[1] == "yes", Kept: cells[2] == "yes", Step: step, Err: msg})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("capability table: no `CAP_...` row under %q in %s", TableHeading, path)
	}
	return rows, nil
}

// splitRow splits a markdown table row at unescaped '|'.
func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|")
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(line); i++ {
		if line[i] == '\\' && i+1 < len(line) && line[i+1] == '|' {
			cur.WriteByte('|')
			i++
			continue
		}
		if line[i] == '|' {
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
			continue
		}
		cur.WriteByte(line[i])
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

// StartSet and KeptSet are the table's sets.
func StartSet(rows []Row) []string { return pick(rows, func(r Row) bool { return r.Start }) }

// KeptSet is what the daemon keeps after the BPF load.
func KeptSet(rows []Row) []string { return pick(rows, func(r Row) bool { return r.Kept }) }

func pick(rows []Row, f func(Row) bool) []string {
	out := []string{}
	for _, r := range rows {
		if f(r) {
			out = append(out, r.Cap)
		}
	}
	return out
}

// UnitCapabilities reads CapabilityBoundingSet= from a systemd unit as
// setpriv names (CAP_NET_ADMIN: net_admin).
func UnitCapabilities(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	found := false
	for _, l := range strings.Split(string(data), "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(l), "CapabilityBoundingSet=")
		if !ok {
			continue
		}
		found = true
		for _, c := range strings.Fields(v) {
			out = append(out, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
		}
	}
	if !found {
		return nil, fmt.Errorf("%s: no CapabilityBoundingSet=", path)
	}
	return out, nil
}

// FailurePaths are capabilities that only a failure path of the agent
// needs, which the scenario does not take (it would have to break CRIU
// mid-restore): another lab test measures each, failing without it. The
// table lists them after the sweep's, and the lab test here does not run
// their step.
var FailurePaths = []Removal{{
	Cap:  "sys_ptrace",
	Step: "lazy-fault",
	Err: "plane's TestPlaneLazyRollback (its lazy-pages daemon killed, killed unnoticed, stalled) fails: the agent finds the CRIU " +
		"it must stop by /proc/PID/cwd, which it may not read in a process holding capabilities it lacks; the lazy restore " +
		"gets \"no answer in time\", and the full restore after it \"container with given ID already exists\"",
}}

// runIDs are the names a run gives its containers and images: the table
// says <id> instead.
var runIDs = regexp.MustCompile(`capm-[0-9]+-[0-9]+`)

func sanitize(s string) string { return runIDs.ReplaceAllString(s, "{id}") }
