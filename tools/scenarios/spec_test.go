package main

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestScenariosFolder: every committed scenario parses, their attack
// scripts exist, and between them they cover issue 25's eight classes over
// at least four services.
func TestScenariosFolder(t *testing.T) {
	scs, err := LoadScenarios(".", nil)
	if err != nil {
		t.Fatal(err)
	}
	services := map[string]bool{}
	covered := map[string]bool{}
	for _, s := range scs {
		services[s.Service] = true
		for _, c := range s.Covers {
			covered[c] = true
		}
		for _, f := range []string{filepath.Join(s.dir, s.Attack), filepath.Join("services", s.Service, "start.sh"),
			filepath.Join("services", s.Service, "ready.sh"), filepath.Join("services", s.Service, "traffic.sh")} {
			if !fileExists(f) {
				t.Errorf("%s: %s is missing", s.Name, f)
			}
		}
	}
	if len(scs) < 8 || len(services) < 4 {
		t.Errorf("%d scenarios over %d services: want at least 8 over 4", len(scs), len(services))
	}
	for _, c := range coverClasses {
		if !covered[c] {
			t.Errorf("no scenario covers %s", c)
		}
	}
	if _, err := LoadScenarios(".", []string{"no-such-scenario"}); err == nil {
		t.Error("an unknown -only name: want an error")
	}
}

func TestParseScenario(t *testing.T) {
	good := "name: a\nservice: web\nattack: attack.sh\ncovers: [miner]\n"
	s, err := ParseScenario([]byte(good), "/x")
	if err != nil {
		t.Fatal(err)
	}
	if s.AttackIn != AttackOutside || s.User != "nobody" || s.Expect.Scorer != scorerLM || time.Duration(s.Expect.Within) != time.Second {
		t.Errorf("defaults: %+v", s)
	}
	for _, bad := range []string{
		"",
		"name: A\nservice: web\nattack: a.sh\ncovers: [miner]\n",
		"name: a\nservice: web\nattack: ../a.sh\ncovers: [miner]\n",
		"name: a\nservice: web\nattack: /bin/sh\ncovers: [miner]\n",
		"name: a\nservice: web\nattack: a.sh\ncovers: [nope]\n",
		"name: a\nservice: web\nattack: a.sh\n",
		"name: a\nservice: web\nattack: a.sh\ncovers: [miner]\nattack_in: host\n",
		"name: a\nservice: web\nattack: a.sh\ncovers: [miner]\nexpect: {scorer: x}\n",
		"name: a\nservice: web\nattack: a.sh\ncovers: [miner]\nexpect: {within: soon}\n",
		"name: a\nservice: web\nattack: a.sh\ncovers: [miner]\nattack_for: 1h\n",
		"name: a\nservice: web\nattack: a.sh\ncovers: [miner]\ntypo: 1\n",
	} {
		if _, err := ParseScenario([]byte(bad), "/x"); !errors.Is(err, ErrSpec) {
			t.Errorf("%q: want ErrSpec, got %v", bad, err)
		}
	}
}

func FuzzParseScenario(f *testing.F) {
	f.Add([]byte("name: a\nservice: web\nattack: attack.sh\ncovers: [miner]\nexpect: {scorer: lm, within: 1s}\n"))
	f.Add([]byte("name: [\n"))
	f.Add([]byte("attack_for: -1s\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseScenario(data, "/x")
		if err != nil {
			if !errors.Is(err, ErrSpec) {
				t.Fatalf("error without ErrSpec: %v", err)
			}
			return
		}
		if !filepath.IsLocal(s.Attack) || !slices.Contains(scorerNames(), s.Expect.Scorer) || len(s.Covers) == 0 {
			t.Fatalf("accepted an invalid scenario: %+v", s)
		}
	})
}
