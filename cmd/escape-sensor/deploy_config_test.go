package main

// The packaging (deploy/) loaded through the sensor's own loader: the same
// (*runConfig).applyFile and validate that `escape-sensor run` calls, on
// the flag set of newRunCmd().

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/escape-mtd/escape/internal/mtls"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

const (
	deployDir     = "../../deploy"
	exampleConfig = deployDir + "/escape.yaml"
	installedPath = "/etc/escape/escape.yaml"
)

// daemonConfig returns the runConfig that newRunCmd's flags write into: the
// one its RunE loads the file into, validates and runs with. newRunCmd keeps
// it in a closure, so it is found through the flags' storage; every flag is
// then checked to write into it, so a change in newRunCmd fails here loudly
// rather than testing another struct.
func daemonConfig(t *testing.T, cmd *cobra.Command) *runConfig {
	t.Helper()
	fs := cmd.Flags()
	typ := reflect.TypeOf(runConfig{})
	first := typ.Field(0)
	fl := fs.Lookup(flagName(yamlKey(first)))
	if fl == nil {
		t.Fatalf("newRunCmd: no flag for %s", yamlKey(first))
	}
	base := unsafe.Add(flagTarget(fl.Value), -int(first.Offset))
	for i := range typ.NumField() {
		f := typ.Field(i)
		key := yamlKey(f)
		fl := fs.Lookup(flagName(key))
		if fl == nil {
			t.Fatalf("sensor key %s has no flag --%s: every key must have its flag (flagKeys maps exceptions)", key, flagName(key))
		}
		if flagTarget(fl.Value) != unsafe.Add(base, f.Offset) {
			t.Fatalf("--%s does not write runConfig.%s of the same runConfig as --%s: newRunCmd changed shape", fl.Name, f.Name, yamlKey(first))
		}
	}
	return (*runConfig)(base)
}

// flagTarget is the variable a pflag value writes: the value itself for
// scalars (*intValue is *int), the slice it points to for slice values.
func flagTarget(v pflag.Value) unsafe.Pointer {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer && rv.Elem().Kind() == reflect.Struct {
		return rv.Elem().Field(0).UnsafePointer()
	}
	return rv.UnsafePointer()
}

func yamlKey(f reflect.StructField) string {
	k, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return k
}

// diffConfig names every key whose value differs (nil and empty lists are
// the same: "containerd: []" is the default of none).
func diffConfig(got, want runConfig) []string {
	var out []string
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range g.NumField() {
		a, b := g.Field(i), w.Field(i)
		if a.Kind() == reflect.Slice && a.Len() == 0 && b.Len() == 0 {
			continue
		}
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			out = append(out, fmt.Sprintf("%s: %v, default %v", yamlKey(g.Type().Field(i)), a.Interface(), b.Interface()))
		}
	}
	return out
}

// loadSensor runs the daemon's loading steps: flags, then the file, then
// validate. It returns the resulting configuration and the defaults.
func loadSensor(t *testing.T, args []string, file string) (got, defaults runConfig, err error) {
	t.Helper()
	cmd := newRunCmd()
	c := daemonConfig(t, cmd)
	defaults = *c
	defaults.Events = slices.Clone(c.Events)
	if err := cmd.ParseFlags(args); err != nil {
		return runConfig{}, defaults, fmt.Errorf("flags %q: %w", args, err)
	}
	if err := c.applyFile(cmd.Flags(), file); err != nil {
		return runConfig{}, defaults, err
	}
	if err := c.validate(); err != nil {
		return runConfig{}, defaults, err
	}
	return *c, defaults, nil
}

// The example's sensor section is exactly the built-in defaults (the file
// documents them), loads through the daemon's loader and validates.
func TestDeployExampleConfigSensorIsTheDefaults(t *testing.T) {
	got, defaults, err := loadSensor(t, nil, exampleConfig)
	if err != nil {
		t.Fatalf("%s: %v", exampleConfig, err)
	}
	if d := diffConfig(got, defaults); len(d) > 0 {
		t.Errorf("%s: the sensor section differs from the flag defaults:\n%s", exampleConfig, strings.Join(d, "\n"))
	}
	// And the comparison can fail: one changed value is named.
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	changed := filepath.Join(t.TempDir(), "escape.yaml")
	if err := os.WriteFile(changed, bytes.Replace(data, []byte("  window: 10\n"), []byte("  window: 12\n"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	got, defaults, err = loadSensor(t, nil, changed)
	if d := diffConfig(got, defaults); err != nil || len(d) != 1 || !strings.HasPrefix(d[0], "window: 12") {
		t.Errorf("a changed window: diff %q, err %v; want exactly window", d, err)
	}
}

// Every key of the sensor's section is written out in the example.
func TestDeployExampleConfigSensorListsEveryKey(t *testing.T) {
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Sensor map[string]yaml.Node `yaml:"sensor"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeOf(runConfig{})
	for i := range typ.NumField() {
		if k := yamlKey(typ.Field(i)); k != "" {
			if _, ok := doc.Sensor[k]; !ok {
				t.Errorf("%s: sensor.%s is not documented", exampleConfig, k)
			}
		}
	}
	if len(doc.Sensor) != typ.NumField() {
		t.Errorf("%s: %d sensor keys, runConfig has %d", exampleConfig, len(doc.Sensor), typ.NumField())
	}
}

// The example's agent section loads through the agent's own loader: h1's
// agent, with the certificate paths `escape-plane certs` output is
// installed under, and every key written out.
func TestDeployExampleConfigAgent(t *testing.T) {
	a, err := loadAgentConfig(exampleConfig)
	if err != nil {
		t.Fatalf("%s: %v", exampleConfig, err)
	}
	if !a.enabled() || a.Listen != "198.51.100.11:7443" {
		t.Errorf("agent listen %q, want h1's 198.51.100.11:7443", a.Listen)
	}
	def := defaultAgentConfig()
	if a.TLS != def.TLS || a.Bridge != def.Bridge || a.CgroupParent != def.CgroupParent || a.State != def.State {
		t.Errorf("agent %+v: tls, bridge, cgroup_parent and state should be the defaults %+v", a, def)
	}
	if a.CRIU != "/opt/escape/bin/criu" || a.Shared != "" || a.Netns != "" || a.RuncRoot != "" {
		t.Errorf("agent criu %q shared %q netns %q runc_root %q", a.CRIU, a.Shared, a.Netns, a.RuncRoot)
	}
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Agent map[string]any `yaml:"agent"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeOf(agentConfig{})
	for i := range typ.NumField() {
		k := yamlKey(typ.Field(i))
		v, ok := doc.Agent[k]
		if !ok {
			t.Errorf("%s: agent.%s is not documented", exampleConfig, k)
			continue
		}
		if ft := typ.Field(i).Type; ft.Kind() == reflect.Struct {
			sub, _ := v.(map[string]any)
			for j := range ft.NumField() {
				if _, ok := sub[yamlKey(ft.Field(j))]; !ok {
					t.Errorf("%s: agent.%s.%s is not documented", exampleConfig, k, yamlKey(ft.Field(j)))
				}
			}
		}
	}
	if len(doc.Agent) != typ.NumField() {
		t.Errorf("%s: %d agent keys, agentConfig has %d", exampleConfig, len(doc.Agent), typ.NumField())
	}
}

// The systemd unit's command line is one the sensor accepts, and with the
// example installed at its --config path the daemon's loader passes.
func TestDeploySystemdSensorCommandLine(t *testing.T) {
	unit, err := os.ReadFile(deployDir + "/systemd/escape-sensor.service")
	if err != nil {
		t.Fatal(err)
	}
	var exec []string
	for _, line := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "ExecStart="); ok {
			exec = strings.Fields(v)
		}
	}
	if len(exec) < 2 || exec[0] != "/usr/local/bin/escape-sensor" || exec[1] != newRunCmd().Name() {
		t.Fatalf("ExecStart %q: want /usr/local/bin/escape-sensor run ...", exec)
	}
	cmd := newRunCmd()
	if err := cmd.ParseFlags(exec[2:]); err != nil {
		t.Fatalf("ExecStart flags: %v", err)
	}
	if p, _ := cmd.Flags().GetString("config"); p != installedPath {
		t.Fatalf("ExecStart --config %q, want %s", p, installedPath)
	}
	if _, _, err := loadSensor(t, exec[2:], exampleConfig); err != nil {
		t.Fatalf("the unit's command line with the example config: %v", err)
	}
}

// The DaemonSet's arguments, with the downward-API node name substituted,
// over the ConfigMap's escape.yaml: what the sensor pod runs with.
func TestDeployKubernetesSensorArgsAndConfigMap(t *testing.T) {
	ds := manifest(t, "20-sensor.yaml", "DaemonSet")
	cm := manifest(t, "10-config.yaml", "ConfigMap")
	var spec struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Command, Args []string
						Env           []struct {
							Name      string
							ValueFrom struct {
								FieldRef struct {
									FieldPath string `yaml:"fieldPath"`
								} `yaml:"fieldRef"`
							} `yaml:"valueFrom"`
						}
					}
				}
			}
		}
	}
	if err := ds.Decode(&spec); err != nil {
		t.Fatal(err)
	}
	ctr := spec.Spec.Template.Spec.Containers[0]
	if !slices.Equal(ctr.Command, []string{"/usr/local/bin/escape-sensor"}) || len(ctr.Args) == 0 || ctr.Args[0] != "run" {
		t.Fatalf("command %q args %q: want escape-sensor run ...", ctr.Command, ctr.Args)
	}
	nodeVar := false
	for _, e := range ctr.Env {
		nodeVar = nodeVar || (e.Name == "NODE_NAME" && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName")
	}
	if !nodeVar {
		t.Fatal("no NODE_NAME from spec.nodeName for $(NODE_NAME)")
	}
	args := make([]string, 0, len(ctr.Args)-1)
	for _, a := range ctr.Args[1:] {
		args = append(args, strings.ReplaceAll(a, "$(NODE_NAME)", "node-a"))
	}
	hostIP := false
	for _, e := range ctr.Env {
		hostIP = hostIP || (e.Name == "HOST_IP" && e.ValueFrom.FieldRef.FieldPath == "status.hostIP")
	}
	if !hostIP {
		t.Fatal("no HOST_IP from status.hostIP for agent.listen's ${HOST_IP}")
	}
	var data struct {
		Data map[string]string `yaml:"data"`
	}
	if err := cm.Decode(&data); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "escape.yaml")
	if err := os.WriteFile(file, []byte(data.Data["escape.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	got, _, err := loadSensor(t, args, file)
	if err != nil {
		t.Fatalf("the DaemonSet's args %q over the ConfigMap: %v", args, err)
	}
	if got.Host != "node-a" || got.Containerd != "/run/containerd/containerd.sock" {
		t.Errorf("host %q containerd %q: want the node's name and its containerd", got.Host, got.Containerd)
	}
	if got.Listen != "127.0.0.1:9464" || got.Namespace != "escape" {
		t.Errorf("listen %q namespace %q", got.Listen, got.Namespace)
	}
	// The agent, with the node's address in HOST_IP as the kubelet sets it.
	t.Setenv("HOST_IP", "203.0.113.7")
	ag, err := loadAgentConfig(file)
	if err != nil {
		t.Fatalf("the ConfigMap's agent section: %v", err)
	}
	if !ag.enabled() || ag.Listen != "203.0.113.7:7443" {
		t.Errorf("agent listen %q, want the node's address 203.0.113.7:7443", ag.Listen)
	}
	if want := mtls.SecretFiles("/etc/escape-tls"); (mtls.Files{CA: ag.TLS.CA, Cert: ag.TLS.Cert, Key: ag.TLS.Key}) != want {
		t.Errorf("agent tls %+v, want the Secret layout %+v", ag.TLS, want)
	}
	t.Setenv("HOST_IP", "")
	if _, err := loadAgentConfig(file); err == nil || !strings.Contains(err.Error(), "HOST_IP") {
		t.Errorf("without HOST_IP: err %v, want one naming HOST_IP", err)
	}
	if p, _ := func() (string, error) {
		cmd := newRunCmd()
		if err := cmd.ParseFlags(args); err != nil {
			return "", err
		}
		return cmd.Flags().GetString("config")
	}(); p != installedPath {
		t.Errorf("--config %q, want %s (where the ConfigMap is mounted)", p, installedPath)
	}
}

// manifest is the first document of kind in a deploy/kubernetes file.
func manifest(t *testing.T, file, kind string) *yaml.Node {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(deployDir, "kubernetes", file))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var head struct{ Kind string }
		if n.Decode(&head) == nil && head.Kind == kind {
			return &n
		}
	}
	t.Fatalf("%s: no %s", file, kind)
	return nil
}
