package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// fileJournal is a test journal: one JSON file per container, written
// atomically, so a killed process leaves a readable journal behind.
type fileJournal struct {
	mu  sync.Mutex
	dir string
}

func (j *fileJournal) PutMigration(_ context.Context, r Record) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := filepath.Join(j.dir, r.Spec.ID+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(j.dir, r.Spec.ID+".json"))
}

func (j *fileJournal) Migrations(_ context.Context) ([]Record, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	es, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, e := range es {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(j.dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("journal %s: %w", e.Name(), err)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Spec.ID < out[b].Spec.ID })
	return out, nil
}

func (j *fileJournal) DeleteMigration(_ context.Context, id string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	err := os.Remove(filepath.Join(j.dir, id+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
