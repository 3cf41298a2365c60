// Package datasets locates the evaluation data that lives beside the
// repository (../shared/datasets, see its README), so tests and benchmarks
// find it wherever the checkout is. The data is never copied into the repo.
package datasets

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/escape-mtd/escape/internal/modroot"
)

// EnvVar overrides where the datasets are.
const EnvVar = "ESCAPE_DATASETS"

// Path returns the path of elem inside the datasets directory: $ESCAPE_DATASETS
// if set, else ../shared/datasets next to the module root found above the
// working directory. It fails, saying where it looked, when that is absent.
func Path(elem ...string) (string, error) {
	dir := os.Getenv(EnvVar)
	if dir == "" {
		root, err := modroot.Find()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "..", "shared", "datasets")
	}
	p := filepath.Join(append([]string{dir}, elem...)...)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("dataset %s not available (set %s, see ../shared/datasets/README.md): %w", p, EnvVar, err)
	}
	return p, nil
}
