package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Window int           `yaml:"window"`
	Flush  time.Duration `yaml:"flush"`
	Sinks  []string      `yaml:"events"`
	Inner  struct {
		Name string `yaml:"name"`
	} `yaml:"inner"`
}

func TestDecodeSectionKeepsDefaultsAndIgnoresOthers(t *testing.T) {
	c := sample{Window: 10, Flush: 5 * time.Second, Sinks: []string{"stdout"}}
	doc := `
sensor:
  window: 12
  inner: {name: x}
plane:
  anything: [goes, here]
`
	if err := Decode([]byte(doc), "sensor", &c); err != nil {
		t.Fatal(err)
	}
	if c.Window != 12 || c.Flush != 5*time.Second || len(c.Sinks) != 1 || c.Inner.Name != "x" {
		t.Fatalf("decoded %+v", c)
	}
}

func TestDecodeErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"sensor:\n  windw: 3\n", "field windw not found"},
		{"sensor:\n  inner: {nme: x}\n", "field nme not found"},
		{"sensr:\n  window: 3\n", "field sensr not found"},
		{"sensor:\n  window: ten\n", "cannot unmarshal !!str `ten`"},
		{"sensor:\n  flush: 5 parsecs\n", "flush"},
		{"sensor: 3\n", "cannot unmarshal"},
		{"sensor: {}\n---\nplane: {}\n", "more than one YAML document"},
		{"\x00\x01", "config"},
	} {
		c := sample{}
		err := Decode([]byte(tc.doc), "sensor", &c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.doc, err, tc.want)
		}
	}
}

func TestDecodeEmptyAndNull(t *testing.T) {
	for _, doc := range []string{"", "sensor:\n", "plane: {x: 1}\n", "# only a comment\n"} {
		c := sample{Window: 10}
		if err := Decode([]byte(doc), "sensor", &c); err != nil || c.Window != 10 {
			t.Errorf("%q: %v, window %d", doc, err, c.Window)
		}
	}
}

func TestDecodeRejectsMisuse(t *testing.T) {
	var c sample
	if err := Decode(nil, "nosuch", &c); err == nil {
		t.Error("unknown section accepted")
	}
	if err := Decode(nil, "sensor", c); err == nil {
		t.Error("non-pointer accepted")
	}
	if err := Decode(make([]byte, MaxBytes+1), "sensor", &c); err == nil {
		t.Error("oversize file accepted")
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "escape.yaml")
	if err := os.WriteFile(path, []byte("sensor:\n  window: 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var c sample
	if err := Load(path, "sensor", &c); err != nil || c.Window != 7 {
		t.Fatalf("load: %v, %+v", err, c)
	}
	if err := Load(filepath.Join(t.TempDir(), "missing.yaml"), "sensor", &c); err == nil {
		t.Fatal("missing file accepted")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("sensor:\n  window: 12\n"))
	f.Add([]byte("plane: {a: 1}\nsensor: {events: [stdout]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := sample{Window: 10}
		_ = Decode(data, "sensor", &c) // must not panic
	})
}
