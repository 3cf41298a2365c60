package deploy

import (
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/escape-mtd/escape/plane"
)

const exampleConfig = "escape.yaml"

// The plane section of the example is exactly the built-in defaults: the
// file documents them, so it must not drift from plane.DefaultConfig and
// plane.DefaultPolicy.
func TestDeployExampleConfigPlaneIsTheDefaults(t *testing.T) {
	f, err := os.Open(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := plane.ParseConfig(f)
	if err != nil {
		t.Fatalf("plane.ParseConfig(%s): %v", exampleConfig, err)
	}
	if got, want := cfg.Defaults.Apply(plane.DefaultPolicy()), plane.DefaultPolicy(); got != want {
		t.Errorf("plane.defaults resolve to %+v, want the built-in policy %+v", got, want)
	}
	// Every policy key is written out (none left to inherit).
	ov := reflect.ValueOf(cfg.Defaults)
	for i := range ov.NumField() {
		if ov.Field(i).IsNil() {
			t.Errorf("plane.defaults.%s is missing", yamlKey(ov.Type().Field(i)))
		}
	}
	cfg.Defaults = plane.PolicyOverrides{}
	def := plane.DefaultConfig()
	if !equalLoose(cfg, def) {
		t.Errorf("plane section differs from plane.DefaultConfig():\n got %+v\nwant %+v", cfg, def)
	}
}

// Every key of plane.Config, its defaults and a container entry appears in
// the example, and the commented example entry ("#|" lines) is valid.
func TestDeployExampleConfigPlaneListsEveryKey(t *testing.T) {
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	section := sectionKeys(t, data, "plane")
	for _, k := range structKeys(reflect.TypeOf(plane.Config{}), "", true) {
		if !section[k] {
			t.Errorf("%s: plane.%s is not documented", exampleConfig, k)
		}
	}
	// The example container entry, uncommented, is a valid configuration.
	var entry []string
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "#|"); ok {
			entry = append(entry, "    "+rest)
		}
	}
	if len(entry) == 0 {
		t.Fatalf("%s: no example container entry (#| lines)", exampleConfig)
	}
	doc := "plane:\n  containers:\n" + strings.Join(entry, "\n") + "\n"
	cfg, err := plane.ParseConfig(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("the example container entry does not parse: %v\n%s", err, doc)
	}
	if len(cfg.Containers) != 1 {
		t.Fatalf("example entry: %d containers", len(cfg.Containers))
	}
	keys := sectionKeys(t, []byte(doc), "plane")
	for _, k := range structKeys(reflect.TypeOf(plane.ContainerConfig{}), "containers[0].", false) {
		if !keys[k] {
			t.Errorf("%s: the example container entry does not show %s", exampleConfig, k)
		}
	}
}

// The example is one document with exactly the two sections.
func TestDeployExampleConfigSections(t *testing.T) {
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]any
	if err := yaml.Unmarshal(data, &top); err != nil {
		t.Fatal(err)
	}
	var got []string
	for k := range top {
		got = append(got, k)
	}
	sort.Strings(got)
	if !slices.Equal(got, []string{"plane", "sensor"}) {
		t.Fatalf("top-level keys %v, want [plane sensor]", got)
	}
}

// sectionKeys lists the dotted keys of section in a YAML document
// (sequences as [i]), e.g. "defaults.retain", "containers[0].id".
func sectionKeys(t *testing.T, data []byte, section string) map[string]bool {
	t.Helper()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, path+"["+strconv.Itoa(i)+"]")
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				if path != "" {
					k = path + "." + k
				}
				keys[k] = true
				walk(n.Content[i+1], k)
			}
		}
	}
	walk(&root, "")
	out := map[string]bool{}
	for k := range keys {
		if rest, ok := strings.CutPrefix(k, section+"."); ok {
			out[rest] = true
		}
	}
	return out
}

// structKeys lists a config struct's YAML keys, descending into nested
// structs if deep; maps, slices and pointers are leaves.
func structKeys(t reflect.Type, prefix string, deep bool) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		k := yamlKey(f)
		if k == "-" {
			continue
		}
		out = append(out, prefix+k)
		ft := f.Type
		if deep && ft.Kind() == reflect.Struct && ft.NumField() > 0 {
			out = append(out, structKeys(ft, prefix+k+".", deep)...)
		}
	}
	return out
}

func yamlKey(f reflect.StructField) string {
	k, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if k == "" {
		return strings.ToLower(f.Name)
	}
	return k
}

// equalLoose is reflect.DeepEqual with nil and empty slices and maps equal
// ("allowed_uids: []" is the default of none).
func equalLoose(a, b any) bool {
	return reflect.DeepEqual(normalize(reflect.ValueOf(a)), normalize(reflect.ValueOf(b)))
}

func normalize(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Struct:
		m := map[string]any{}
		for i := range v.NumField() {
			m[v.Type().Field(i).Name] = normalize(v.Field(i))
		}
		return m
	case reflect.Slice, reflect.Map:
		if v.Len() == 0 {
			return nil
		}
	}
	return v.Interface()
}
