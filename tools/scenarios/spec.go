package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"time"

	"github.com/escape-mtd/escape/bags"
	"go.yaml.in/yaml/v3"
)

// Where an attack runs: through the service (attack_in: outside, the
// attacker's client in the namespace but not in the cgroup, so only what
// the service does is recorded) or in the service's container (attack_in:
// container, as `docker exec` or an attacker's foothold would: the same
// cgroup, namespace and user as the service).
const (
	AttackOutside   = "outside"
	AttackContainer = "container"
)

// Scenario is one scenario.yaml.
type Scenario struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Service names services/<Service>/, whose start.sh runs in the cgroup
	// and traffic.sh (outside it) is the normal load.
	Service string `yaml:"service"`
	// User the service and a container attack run as.
	User string `yaml:"user"`
	// Attack is the attack script, relative to the scenario's folder.
	Attack   string `yaml:"attack"`
	AttackIn string `yaml:"attack_in"`
	// AttackFor bounds the attack script's run (it is killed then).
	AttackFor Duration `yaml:"attack_for"`
	Covers    []string `yaml:"covers"`
	Expect    Expect   `yaml:"expect"`

	dir string // the scenario's folder
}

// Expect is the expected verdict: detected by Scorer within Within of the
// attack's start.
type Expect struct {
	Scorer string   `yaml:"scorer"`
	Within Duration `yaml:"within"`
}

// Duration is a time.Duration written as "1s", "500ms" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// Coverage classes of issue 25, part 3.
var coverClasses = []string{"reverse-shell", "brute-force", "secrets", "exfiltration", "dropper",
	"miner", "privilege-escalation", "escape-probe"}

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)

// ErrSpec marks an invalid scenario.yaml.
var ErrSpec = errors.New("invalid scenario")

// ParseScenario checks one scenario.yaml's bytes; dir is its folder.
func ParseScenario(data []byte, dir string) (*Scenario, error) {
	var s Scenario
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSpec, err)
	}
	s.dir = dir
	if s.AttackIn == "" {
		s.AttackIn = AttackOutside
	}
	if s.AttackFor == 0 {
		s.AttackFor = Duration(60 * time.Second)
	}
	if s.User == "" {
		s.User = "nobody"
	}
	if s.Expect.Scorer == "" {
		s.Expect.Scorer = bags.RuleLM
	}
	if s.Expect.Within == 0 {
		s.Expect.Within = Duration(time.Second)
	}
	switch {
	case !namePattern.MatchString(s.Name):
		return nil, fmt.Errorf("%w: name %q: want 1-31 of a-z, 0-9, -", ErrSpec, s.Name)
	case !namePattern.MatchString(s.Service):
		return nil, fmt.Errorf("%w %s: service %q: want 1-31 of a-z, 0-9, -", ErrSpec, s.Name, s.Service)
	case s.Attack == "" || filepath.IsAbs(s.Attack) || !filepath.IsLocal(s.Attack):
		return nil, fmt.Errorf("%w %s: attack %q: want a script inside the scenario's folder", ErrSpec, s.Name, s.Attack)
	case s.AttackIn != AttackOutside && s.AttackIn != AttackContainer:
		return nil, fmt.Errorf("%w %s: attack_in %q: want %s or %s", ErrSpec, s.Name, s.AttackIn, AttackOutside, AttackContainer)
	case s.AttackFor < 0 || time.Duration(s.AttackFor) > 10*time.Minute:
		return nil, fmt.Errorf("%w %s: attack_for %v: want 0..10m", ErrSpec, s.Name, time.Duration(s.AttackFor))
	case s.Expect.Within < 0:
		return nil, fmt.Errorf("%w %s: expect.within %v is negative", ErrSpec, s.Name, time.Duration(s.Expect.Within))
	case !slices.Contains(scorerNames(), s.Expect.Scorer):
		return nil, fmt.Errorf("%w %s: expect.scorer %q: want one of %v", ErrSpec, s.Name, s.Expect.Scorer, scorerNames())
	case len(s.Covers) == 0:
		return nil, fmt.Errorf("%w %s: covers: name at least one of %v", ErrSpec, s.Name, coverClasses)
	}
	for _, c := range s.Covers {
		if !slices.Contains(coverClasses, c) {
			return nil, fmt.Errorf("%w %s: covers %q: want one of %v", ErrSpec, s.Name, c, coverClasses)
		}
	}
	return &s, nil
}

// LoadScenarios reads every <root>/*/scenario.yaml, in name order; only, if
// not empty, selects scenarios by name.
func LoadScenarios(root string, only []string) ([]*Scenario, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("scenarios folder: %w", err)
	}
	paths, err := filepath.Glob(filepath.Join(root, "*", "scenario.yaml"))
	if err != nil {
		return nil, fmt.Errorf("list scenarios in %s: %w", root, err)
	}
	sort.Strings(paths)
	var out []*Scenario
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read scenario: %w", err)
		}
		s, err := ParseScenario(data, filepath.Dir(p))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if len(only) == 0 || slices.Contains(only, s.Name) {
			out = append(out, s)
		}
	}
	for _, n := range only {
		if !slices.ContainsFunc(out, func(s *Scenario) bool { return s.Name == n }) {
			return nil, fmt.Errorf("scenario %q: not found under %s", n, root)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no scenario.yaml under %s", root)
	}
	return out, nil
}
