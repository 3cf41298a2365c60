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

// The plane section of the example is a three-host install that the
// plane's own loader (plane.ParseConfig, which validates) accepts: its
// inventory, its certificates and its API are what docs/operations.md
// describes, the policy is the built-in one, and what it does not set is
// plane.DefaultConfig()'s.
func TestDeployExampleConfigPlane(t *testing.T) {
	f, err := os.Open(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := plane.ParseConfig(f)
	if err != nil {
		t.Fatalf("plane.ParseConfig(%s): %v", exampleConfig, err)
	}
	want := []plane.HostConfig{
		{Name: "h1", Agent: "198.51.100.11:7443"},
		{Name: "h2", Agent: "198.51.100.12:7443"},
		{Name: "h3", Agent: "198.51.100.13:7443"},
	}
	if len(cfg.Hosts) != len(want) {
		t.Fatalf("%d hosts, want h1, h2, h3", len(cfg.Hosts))
	}
	for i, h := range cfg.Hosts {
		if h.Name != want[i].Name || h.Agent != want[i].Agent {
			t.Errorf("hosts[%d] = %s at %s, want %s at %s", i, h.Name, h.Agent, want[i].Name, want[i].Agent)
		}
		for _, k := range []string{"datacenter", "network", "kernel", "runtime", "config"} {
			if h.Labels[k] == "" {
				t.Errorf("hosts[%d] (%s): label %s missing (the destination model uses it)", i, h.Name, k)
			}
		}
	}
	if cfg.API != "198.51.100.10:7444" {
		t.Errorf("api %q, want the plane host's 198.51.100.10:7444", cfg.API)
	}
	if cfg.ServiceRange != "198.51.100.128/25" || cfg.ServicePrefix != 24 {
		t.Errorf("service range %s /%d, want 198.51.100.128/25 on a /24", cfg.ServiceRange, cfg.ServicePrefix)
	}
	def := plane.DefaultConfig()
	// The plane's certificate is where `escape-plane certs issue --role
	// plane --name plane --out-dir /etc/escape/pki` writes it.
	if cfg.TLS != def.TLS || cfg.TLS.Cert != "/etc/escape/pki/plane.crt" {
		t.Errorf("tls %+v, want the defaults %+v", cfg.TLS, def.TLS)
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
	// Everything else is at its default: the file documents them.
	cfg.Defaults = plane.PolicyOverrides{}
	cfg.Hosts, cfg.API, cfg.ServiceRange = nil, "", ""
	def.ServicePrefix = cfg.ServicePrefix
	if !equalLoose(cfg, def) {
		t.Errorf("plane section differs from plane.DefaultConfig() beyond hosts, api and the service range:\n got %+v\nwant %+v", cfg, def)
	}
}

// The file is one the plane refuses when an agent address or the service
// range is broken: the loader really checks what the test above relies on.
func TestDeployExampleConfigPlaneRefusesBrokenCopies(t *testing.T) {
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ from, to, want string }{
		{"agent: 198.51.100.12:7443", "agent: 198.51.100.12", "hosts[1] (h2): agent"},
		{"service_range: 198.51.100.128/25", "service_range: \"\"", "service_range"},
		{"- name: h3", "- name: h1", `host "h1" listed twice`},
		{"api: 198.51.100.10:7444", "api: p1", "api:"},
	} {
		broken := strings.Replace(string(data), tc.from, tc.to, 1)
		if broken == string(data) {
			t.Fatalf("%s no longer contains %q: update this test", exampleConfig, tc.from)
		}
		if _, err := plane.ParseConfig(strings.NewReader(broken)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q -> %q: err %v, want one containing %q", tc.from, tc.to, err, tc.want)
		}
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
	// In place of "containers: []", with the rest of the file (its hosts
	// and service range) around it.
	doc := strings.Replace(string(data), "\n  containers: []\n", "\n  containers:\n"+strings.Join(entry, "\n")+"\n", 1)
	if doc == string(data) {
		t.Fatalf("%s: no \"  containers: []\" line to put the example entry in", exampleConfig)
	}
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

// The example is one document with exactly the three sections.
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
	if !slices.Equal(got, []string{"agent", "plane", "sensor"}) {
		t.Fatalf("top-level keys %v, want [agent plane sensor]", got)
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
