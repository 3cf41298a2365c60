package eval

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/escape-mtd/escape/bags/trace"
)

// Trace is one ADFA-LD trace.
type Trace struct {
	Name   string // path relative to the dataset root
	Family string // attack family (Adduser, Hydra_FTP, ...) or "normal"
	Calls  []uint16
}

// Dataset is the part of ADFA-LD used for training and evaluation.
type Dataset struct {
	Train  []Trace
	Valid  []Trace // all normal validation traces, name order
	Attack []Trace
}

// Split returns the threshold-selection half (even positions) and the
// reporting half (odd positions) of the validation traces.
func (d *Dataset) Split() (sel, rep []Trace) {
	for i, t := range d.Valid {
		if i%2 == 0 {
			sel = append(sel, t)
		} else {
			rep = append(rep, t)
		}
	}
	return sel, rep
}

// LoadADFA reads Training_Data_Master, Validation_Data_Master and
// Attack_Data_Master under root.
func LoadADFA(ctx context.Context, root string) (*Dataset, error) {
	var d Dataset
	var err error
	if d.Train, err = loadDir(ctx, root, "Training_Data_Master"); err != nil {
		return nil, err
	}
	if d.Valid, err = loadDir(ctx, root, "Validation_Data_Master"); err != nil {
		return nil, err
	}
	if d.Attack, err = loadDir(ctx, root, "Attack_Data_Master"); err != nil {
		return nil, err
	}
	// Validation is cut in halves (A, B) and A again in halves (A1, A2).
	if len(d.Train) == 0 || len(d.Valid) < 4 || len(d.Attack) == 0 {
		return nil, fmt.Errorf("load ADFA-LD %s: %d training, %d validation (4 or more), %d attack traces: incomplete dataset",
			root, len(d.Train), len(d.Valid), len(d.Attack))
	}
	return &d, nil
}

// parseRunDir splits an attack run folder name, Hydra_FTP_3 → (Hydra_FTP, 3).
// The run number orders the dev/held-out split, so it must be a positive
// integer and the family must not be empty.
func parseRunDir(dir string) (family string, run int, ok bool) {
	i := strings.LastIndexByte(dir, '_')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(dir[i+1:])
	if err != nil || n < 1 {
		return "", 0, false
	}
	return dir[:i], n, true
}

func loadDir(ctx context.Context, root, sub string) ([]Trace, error) {
	dir := filepath.Join(root, sub)
	var paths []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() && strings.HasSuffix(p, ".txt") {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load ADFA-LD %s: %w", dir, err)
	}
	sort.Strings(paths)
	out := make([]Trace, 0, len(paths))
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("load ADFA-LD: %w", err)
		}
		calls, err := trace.ReadAll(ctx, trace.NewADFAReader(f))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("load ADFA-LD %s: %w", p, err)
		}
		rel, _ := filepath.Rel(root, p)
		fam := "normal"
		if sub == "Attack_Data_Master" {
			var ok bool
			if fam, _, ok = parseRunDir(filepath.Base(filepath.Dir(p))); !ok || filepath.Dir(filepath.Dir(p)) != dir {
				return nil, fmt.Errorf("load ADFA-LD %s: an attack trace must sit in a run folder %s/<family>_<run> (run 1, 2, ...)", p, dir)
			}
		}
		out = append(out, Trace{Name: rel, Family: fam, Calls: calls})
	}
	return out, nil
}
