package migrate

import (
	"net/netip"
	"testing"
)

func TestSpecValidate(t *testing.T) {
	good := Spec{ID: "db", Image: "escape.local/redis:latest", Args: []string{"/x"}, IP: netip.MustParsePrefix("198.18.1.20/15"), MAC: "02:e5:00:00:00:01"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Spec){
		"id":           func(s *Spec) { s.ID = "../x" },
		"image path":   func(s *Spec) { s.Image = "/var/lib/rootfs" },
		"image dot":    func(s *Spec) { s.Image = "../rootfs" },
		"image empty":  func(s *Spec) { s.Image = "" },
		"image blank":  func(s *Spec) { s.Image = "redis latest" },
		"image upper":  func(s *Spec) { s.Image = "Redis" },
		"ip":           func(s *Spec) { s.IP = netip.MustParsePrefix("198.18.1.20/32") },
		"mac":          func(s *Spec) { s.MAC = "03:00:00:00:00:01" },
		"network lock": func(s *Spec) { s.NetworkLock = "ebtables" },
	} {
		s := good
		mut(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: garbage accepted", name)
		}
	}
	for _, ref := range []string{"redis", "redis:7", "docker.io/library/redis:7", "registry.example:5000/team/app@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"} {
		if err := ValidImageRef(ref); err != nil {
			t.Errorf("%s refused: %v", ref, err)
		}
	}
}

func TestImageNameValidate(t *testing.T) {
	for _, ok := range []ImageName{"checkpoints/redis/000001-e12", CheckpointImage("db", 3, 9), MigrationImage("db", "20261202t101010.000000001")} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []ImageName{"", "/abs", "a/../b", "a//b", "../x", "a/.hidden", "A/b", "a b", "a/b/", "x\x00y"} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
