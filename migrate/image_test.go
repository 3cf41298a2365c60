package migrate

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVerifyImageRejectsGarbage(t *testing.T) {
	if _, err := VerifyImage(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing dir accepted")
	}
	dir := t.TempDir()
	if _, err := VerifyImage(dir); !errors.Is(err, ErrIncompleteImage) {
		t.Fatalf("empty dir: %v", err)
	}
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("inventory.img", "x")
	write("pstree.img", "")
	write("core-1.img", "x")
	_, err := VerifyImage(dir)
	if err == nil || !strings.Contains(err.Error(), "pstree.img") || !strings.Contains(err.Error(), "pages") {
		t.Fatalf("partial image: %v", err)
	}
	write("pstree.img", "x")
	write("pages-1.img", "xyz")
	n, err := VerifyImage(dir)
	if err != nil || n != 6 {
		t.Fatalf("complete image: %d %v", n, err)
	}
}

func TestSpecValidate(t *testing.T) {
	good := Spec{ID: "db", RootFS: "/r", Args: []string{"/x"}, IP: netip.MustParsePrefix("198.18.1.20/15"), MAC: "02:e5:00:00:00:01"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Spec){
		"id":        func(s *Spec) { s.ID = "../x" },
		"rootfs":    func(s *Spec) { s.RootFS = "rel" },
		"args":      func(s *Spec) { s.Args = nil },
		"ip":        func(s *Spec) { s.IP = netip.MustParsePrefix("198.18.1.20/32") },
		"mac":       func(s *Spec) { s.MAC = "03:00:00:00:00:01" },
		"criu_conf": func(s *Spec) { s.CRIUConfig = "x.conf" },
	} {
		s := good
		mut(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: garbage accepted", name)
		}
	}
	if _, err := New(nil, nil, "/x"); err == nil {
		t.Fatal("migrator without runtime accepted")
	}
	if _, err := NewRuntime([]Host{{Name: "a"}}); err == nil {
		t.Fatal("host without socket accepted")
	}
}
