package node

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestReadCRIUStats(t *testing.T) {
	dir := t.TempDir()
	// A stats-dump written by CRIU 4.2.1 for a 64 MiB process.
	dump := []byte{0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57, 0x29, 0, 0, 0,
		0x0a, 0x27, 0x08, 0xa1, 0x12, 0x10, 0xd8, 0xe1, 0x0a, 0x18, 0xe9, 0xe9, 0x01, 0x20, 0xe8, 0xa4, 0x01, 0x28, 0x89, 0x82,
		0x01, 0x30, 0x00, 0x38, 0xd2, 0x81, 0x01, 0x40, 0x00, 0x48, 0x00, 0x50, 0x08, 0x58, 0x08, 0x60,
		0x00, 0x68, 0x00, 0x70, 0x00}
	if err := os.WriteFile(filepath.Join(dir, "stats-dump"), dump, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := readCRIUStats(dir, filepath.Join(dir, "absent"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Freezing != 2337*time.Microsecond || s.Frozen != 176344*time.Microsecond ||
		s.MemDump != 29929*time.Microsecond || s.MemWrite != 21096*time.Microsecond || s.PagesWritten != 16594 {
		t.Fatalf("decoded %+v", s)
	}
	if s.Restore != 0 {
		t.Fatalf("restore from a missing file: %v", s.Restore)
	}
	if err := os.WriteFile(filepath.Join(dir, "stats-restore"), []byte{1, 2, 3}, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readCRIUStats("", dir); err == nil {
		t.Fatal("truncated stats accepted")
	}
}
