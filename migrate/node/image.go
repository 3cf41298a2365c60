package node

import (
	"fmt"
	"github.com/escape-mtd/escape/migrate"
	"os"
	"strings"
)

// verifyDir checks that dir holds a complete CRIU dump: the inventory,
// the process tree, at least one core and one pages image, none empty. It
// returns the total size in bytes.
func verifyDir(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("verify image %s: %w", dir, err)
	}
	var size int64
	have := map[string]bool{}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return 0, fmt.Errorf("verify image %s: %w", dir, err)
		}
		name := e.Name()
		size += info.Size()
		switch {
		case name == "inventory.img", name == "pstree.img":
			have[name] = info.Size() > 0
		case strings.HasPrefix(name, "core-") && strings.HasSuffix(name, ".img"):
			have["core"] = have["core"] || info.Size() > 0
		case strings.HasPrefix(name, "pages-") && strings.HasSuffix(name, ".img"):
			have["pages"] = true
		}
	}
	var missing []string
	for _, k := range []string{"inventory.img", "pstree.img", "core", "pages"} {
		if !have[k] {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return size, fmt.Errorf("verify image %s: %w: missing or empty %s", dir, ErrIncompleteImage, strings.Join(missing, ", "))
	}
	return size, nil
}

// ErrIncompleteImage means a checkpoint directory does not hold a whole
// dump (the same error as migrate's, which crosses the wire).
var ErrIncompleteImage = migrate.ErrIncompleteImage
