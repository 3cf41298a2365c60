package kubernetes

import (
	"encoding/json"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/escape-mtd/escape/plane"
)

func TestManifestSchemaFilesArePinned(t *testing.T) {
	checkSchemaFiles(t)
	v, err := os.ReadFile(filepath.Join(schemaDir, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(strings.TrimSpace(string(v)), "v1.") {
		t.Fatalf("VERSION %q: want a Kubernetes release such as v1.34.4", v)
	}
	readme, err := os.ReadFile(filepath.Join(schemaDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), strings.TrimSpace(string(v))) {
		t.Errorf("testdata/schemas/README.md does not name the release %s", strings.TrimSpace(string(v)))
	}
}

func TestManifestsValidateAgainstKubernetesSchemas(t *testing.T) {
	v := newValidator(t)
	objs := loadManifests(t, ".")
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.kind()]++
		for _, err := range v.validate(o) {
			t.Error(err)
		}
		if o.kind() != "Namespace" {
			if ns, _ := get(o.Value, "metadata", "namespace").(string); ns != "escape-system" {
				t.Errorf("%s: namespace %q, want escape-system", o, ns)
			}
		}
	}
	want := map[string]int{"Namespace": 1, "ConfigMap": 1, "ServiceAccount": 2, "DaemonSet": 1, "Deployment": 1}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("%d %s objects, want %d", kinds[k], k, n)
		}
	}
	if len(kinds) != len(want) {
		t.Errorf("kinds %v, want %v", kinds, want)
	}
}

// The validator must fail where the API server (or kubectl's strict field
// validation) would: each broken copy is rejected with an error naming the
// field, and the unbroken original passes.
func TestManifestValidatorRejectsBrokenCopies(t *testing.T) {
	v := newValidator(t)
	objs := loadManifests(t, ".")
	for _, tc := range []struct {
		name, kind string
		breakIt    func(m map[string]any)
		want       string
	}{
		{"misspelt hostPID", "DaemonSet", func(m map[string]any) {
			pod := get(m, "spec", "template", "spec").(map[string]any)
			pod["hostPid"] = pod["hostPID"]
			delete(pod, "hostPID")
		}, `spec.template.spec.hostPid: unknown field "hostPid" (did you mean "hostPID"?)`},
		{"replicas as a word", "Deployment", func(m map[string]any) {
			get(m, "spec").(map[string]any)["replicas"] = "one"
		}, `spec.replicas: got string, want integer`},
		{"container without image", "Deployment", func(m map[string]any) {
			delete(get(m, "spec", "template", "spec", "containers", 0).(map[string]any), "image")
		}, `spec.template.spec.containers[0].image: Required value`},
		{"container without name", "DaemonSet", func(m map[string]any) {
			delete(get(m, "spec", "template", "spec", "containers", 0).(map[string]any), "name")
		}, `spec.template.spec.containers[0]: missing property 'name'`},
		{"quoted boolean", "DaemonSet", func(m map[string]any) {
			get(m, "spec", "template", "spec").(map[string]any)["hostNetwork"] = "true"
		}, `spec.template.spec.hostNetwork: got string, want boolean`},
		{"probe port out of int-or-string", "DaemonSet", func(m map[string]any) {
			get(m, "spec", "template", "spec", "containers", 0, "livenessProbe", "httpGet").(map[string]any)["port"] = []any{"9464"}
		}, `spec.template.spec.containers[0].livenessProbe.httpGet.port`},
		{"misspelt field deep in a mount", "Deployment", func(m map[string]any) {
			mounts := get(m, "spec", "template", "spec", "containers", 0, "volumeMounts").([]any)
			last := mounts[len(mounts)-1].(map[string]any)
			last["mountPropogation"] = last["mountPropagation"]
			delete(last, "mountPropagation")
		}, `spec.template.spec.containers[0].volumeMounts[5].mountPropogation: unknown field`},
		{"mount of an undeclared volume", "DaemonSet", func(m map[string]any) {
			get(m, "spec", "template", "spec", "containers", 0, "volumeMounts", 0).(map[string]any)["name"] = "nosuch"
		}, `spec.template.spec.containers[0].volumeMounts[0].name: Not found: "nosuch"`},
		{"selector not matching the template", "Deployment", func(m map[string]any) {
			get(m, "spec", "selector", "matchLabels").(map[string]any)["app.kubernetes.io/name"] = "other"
		}, "spec.template.metadata.labels: `selector` does not match template `labels`"},
		{"grace period as a string", "Deployment", func(m map[string]any) {
			get(m, "spec", "template", "spec").(map[string]any)["terminationGracePeriodSeconds"] = "660"
		}, `spec.template.spec.terminationGracePeriodSeconds: got string, want integer`},
		{"unknown apiVersion", "DaemonSet", func(m map[string]any) { m["apiVersion"] = "apps/v1beta9" },
			`apiVersion "apps/v1beta9" kind "DaemonSet": no schema`},
		{"unknown top-level field", "ConfigMap", func(m map[string]any) { m["date"] = m["data"]; delete(m, "data") },
			`date: unknown field "date"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := find(t, objs, tc.kind)
			if errs := v.validate(orig); len(errs) != 0 {
				t.Fatalf("the original fails already: %v", errs)
			}
			broken := object{File: orig.File, Index: orig.Index, Value: deepCopy(t, orig.Value)}
			tc.breakIt(broken.Value)
			errs := v.validate(broken)
			var msgs []string
			for _, err := range errs {
				msgs = append(msgs, err.Error())
				if strings.Contains(err.Error(), tc.want) {
					t.Logf("rejected: %v", err)
					return
				}
			}
			t.Fatalf("broken copy: want an error containing %q, got %d:\n%s", tc.want, len(errs), strings.Join(msgs, "\n"))
		})
	}
}

func TestManifestYAMLReadsTheSameInKubectl(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: yes}\n", `data.a: plain "yes" reads differently`},
		{"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: on}\n", `data.a: plain "on"`},
		{"spec: {defaultMode: 0644}\n", `spec.defaultMode: plain "0644"`},
		{"a: 1\na: 2\n", "already defined"},
		{"? [a]\n: b\n", "is not a string"},
	} {
		_, err := parseManifests("t.yaml", []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error containing %q", tc.doc, err, tc.want)
		}
	}
	objs, err := parseManifests("t.yaml", []byte("---\n# empty\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: \"yes\", n: \"0644\"}\n"))
	if err != nil || len(objs) != 1 || get(objs[0].Value, "data", "a") != "yes" {
		t.Fatalf("quoted scalars: %v %v", objs, err)
	}
}

func TestManifestSensorDaemonSet(t *testing.T) {
	objs := loadManifests(t, ".")
	ds := find(t, objs, "DaemonSet")
	pod := get(ds.Value, "spec", "template", "spec").(map[string]any)
	ctr := get(pod, "containers", 0).(map[string]any)
	for _, k := range []string{"hostPID", "hostNetwork"} {
		if pod[k] != true {
			t.Errorf("%s: %s must be true", ds, k)
		}
	}
	if get(ctr, "securityContext", "privileged") != true {
		t.Errorf("%s: the sensor must be privileged (bpf, perf, every cgroup)", ds)
	}
	if !toleratesEverything(pod) {
		t.Errorf("%s: needs a toleration {operator: Exists} to run on every node", ds)
	}
	checkResources(t, ds, ctr)
	checkServiceAccount(t, objs, ds, pod)
	checkConfigVolume(t, objs, ds, pod, ctr)
	mounts := hostMounts(t, ds, pod, ctr)
	for p, ro := range map[string]bool{"/sys/kernel/btf": true, "/sys/fs/cgroup": true, "/run/containerd": true,
		"/var/lib/escape-sensor": false, "/run/escape-plane": false, "/run/escape-sensor": false} {
		m, ok := mounts[p]
		if !ok {
			t.Errorf("%s: host path %s is not mounted at the same path", ds, p)
		} else if ro && !m.readOnly {
			t.Errorf("%s: %s should be read-only", ds, p)
		}
	}
	cfg := sensorSection(t, objs)
	listen := netip.MustParseAddrPort(cfg["listen"].(string))
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		checkProbe(t, ds, ctr, probe, listen)
	}
	for _, key := range []string{"profiles", "control", "plane"} {
		p, _ := cfg[key].(string)
		if p == "" || !under(mounts, p, true) {
			t.Errorf("%s: sensor.%s %q is not on a writable host path mounted at the same path", ds, key, p)
		}
	}
	if !under(mounts, "/run/containerd/containerd.sock", false) || !strings.Contains(strings.Join(strs(ctr["args"]), " "), "=/run/containerd/containerd.sock") {
		t.Errorf("%s: the node's containerd socket must be both mounted and passed with --containerd", ds)
	}
}

func TestManifestPlaneDeployment(t *testing.T) {
	objs := loadManifests(t, ".")
	d := find(t, objs, "Deployment")
	spec := get(d.Value, "spec").(map[string]any)
	if n, _ := spec["replicas"].(json.Number); n != "1" {
		t.Errorf("%s: replicas %v, want 1 (the plane owns a bbolt file)", d, spec["replicas"])
	}
	if get(spec, "strategy", "type") != "Recreate" {
		t.Errorf("%s: strategy must be Recreate: two planes never run at once", d)
	}
	pod := get(spec, "template", "spec").(map[string]any)
	ctr := get(pod, "containers", 0).(map[string]any)
	for _, k := range []string{"hostPID", "hostNetwork"} {
		if pod[k] != true {
			t.Errorf("%s: %s must be true", d, k)
		}
	}
	if get(ctr, "securityContext", "privileged") != true {
		t.Errorf("%s: the plane must be privileged", d)
	}
	if get(pod, "nodeSelector", "escape.io/plane") != "true" {
		t.Errorf("%s: nodeSelector escape.io/plane: \"true\" missing", d)
	}
	// The plane waits up to 10 minutes for an action under way; the pod
	// must not be killed before that, with room to spare.
	grace, _ := pod["terminationGracePeriodSeconds"].(json.Number)
	if g, err := grace.Int64(); err != nil || time.Duration(g)*time.Second < 11*time.Minute {
		t.Errorf("%s: terminationGracePeriodSeconds %v, want >= 660", d, grace)
	}
	checkResources(t, d, ctr)
	checkServiceAccount(t, objs, d, pod)
	checkConfigVolume(t, objs, d, pod, ctr)
	if args := strs(ctr["args"]); strings.Join(args, " ") != "serve --config /etc/escape/escape.yaml" {
		t.Errorf("%s: args %q", d, args)
	}
	mounts := hostMounts(t, d, pod, ctr)
	if m, ok := mounts["/run/netns"]; !ok || m.propagation != "Bidirectional" {
		t.Errorf("%s: /run/netns must be mounted with Bidirectional propagation (got %+v)", d, m)
	}
	cfg := planeConfig(t, objs)
	for key, p := range map[string]string{"socket": cfg.Socket, "state": cfg.State, "audit": cfg.Audit,
		"lab_root": cfg.LabRoot + "/lab.json"} {
		if !under(mounts, p, true) {
			t.Errorf("%s: plane.%s %q is not on a writable host path mounted at the same path", d, key, p)
		}
	}
	if !under(mounts, "/run/containerd/containerd.sock", true) {
		t.Errorf("%s: the node's containerd directory is not mounted", d)
	}
	for _, probe := range []string{"startupProbe", "livenessProbe", "readinessProbe"} {
		checkProbe(t, d, ctr, probe, netip.MustParseAddrPort(cfg.Listen))
	}
	// The startup probe must outlast the settling of the previous run's work.
	period, _ := get(ctr, "startupProbe", "periodSeconds").(json.Number)
	fails, _ := get(ctr, "startupProbe", "failureThreshold").(json.Number)
	p, _ := period.Int64()
	f, _ := fails.Int64()
	if time.Duration(p*f)*time.Second < 10*time.Minute {
		t.Errorf("%s: startupProbe allows %ds, want >= 600s", d, p*f)
	}
}

// The sensor's socket path for the plane and the plane's socket must be the
// same file, on the same host directory in both pods.
func TestManifestSensorReachesPlaneSocket(t *testing.T) {
	objs := loadManifests(t, ".")
	cfg := planeConfig(t, objs)
	if s, _ := sensorSection(t, objs)["plane"].(string); s != cfg.Socket {
		t.Fatalf("sensor.plane %q != plane.socket %q", s, cfg.Socket)
	}
	if cfg.Socket != plane.DefaultConfig().Socket {
		t.Errorf("plane.socket %q differs from the default %q that escape-plane's operator commands use", cfg.Socket, plane.DefaultConfig().Socket)
	}
}

// --- helpers ---

type mount struct {
	readOnly    bool
	propagation string
}

// hostMounts maps host path -> mount for each hostPath volume mounted at
// the same path inside the container (the daemons hand paths to the host's
// containerd, so inside and outside must agree).
func hostMounts(t *testing.T, o object, pod, ctr map[string]any) map[string]mount {
	t.Helper()
	vols := map[string]string{}
	for _, v := range list(pod["volumes"]) {
		if p, ok := get(v, "hostPath", "path").(string); ok {
			vols[get(v, "name").(string)] = p
		}
	}
	out := map[string]mount{}
	for _, m := range list(ctr["volumeMounts"]) {
		host, ok := vols[get(m, "name").(string)]
		if !ok {
			continue
		}
		mp, _ := get(m, "mountPath").(string)
		if mp != host {
			t.Errorf("%s: host path %s mounted at %s: mount it at the same path", o, host, mp)
			continue
		}
		ro, _ := get(m, "readOnly").(bool)
		prop, _ := get(m, "mountPropagation").(string)
		out[host] = mount{readOnly: ro, propagation: prop}
	}
	return out
}

// under reports whether file lies in a mounted host directory (writable if asked).
func under(mounts map[string]mount, file string, writable bool) bool {
	for dir := path.Dir(file); ; dir = path.Dir(dir) {
		if m, ok := mounts[dir]; ok {
			return !writable || !m.readOnly
		}
		if dir == "/" || dir == "." {
			return false
		}
	}
}

func checkProbe(t *testing.T, o object, ctr map[string]any, probe string, listen netip.AddrPort) {
	t.Helper()
	h, ok := get(ctr, probe, "httpGet").(map[string]any)
	if !ok {
		t.Errorf("%s: no %s.httpGet", o, probe)
		return
	}
	port, _ := h["port"].(json.Number)
	if h["path"] != "/healthz" || h["host"] != listen.Addr().String() || string(port) != strconv.Itoa(int(listen.Port())) {
		t.Errorf("%s: %s probes %v:%v%v, want %s/healthz (the configured listen address)", o, probe, h["host"], port, h["path"], listen)
	}
}

func checkResources(t *testing.T, o object, ctr map[string]any) {
	t.Helper()
	for _, k := range []string{"requests", "limits"} {
		for _, r := range []string{"cpu", "memory"} {
			if get(ctr, "resources", k, r) == nil {
				t.Errorf("%s: resources.%s.%s missing", o, k, r)
			}
		}
	}
}

func checkServiceAccount(t *testing.T, objs []object, o object, pod map[string]any) {
	t.Helper()
	name, _ := pod["serviceAccountName"].(string)
	found := false
	for _, sa := range objs {
		if sa.kind() == "ServiceAccount" && sa.name() == name {
			found = true
		}
	}
	if !found {
		t.Errorf("%s: serviceAccountName %q is not among the manifests", o, name)
	}
	if pod["automountServiceAccountToken"] != false {
		t.Errorf("%s: the daemons never call the API: automountServiceAccountToken must be false", o)
	}
}

// checkConfigVolume: escape.yaml from the ConfigMap at /etc/escape/escape.yaml.
func checkConfigVolume(t *testing.T, objs []object, o object, pod, ctr map[string]any) {
	t.Helper()
	if !strings.Contains(strings.Join(strs(ctr["args"]), " "), "--config /etc/escape/escape.yaml") {
		t.Errorf("%s: args must contain --config /etc/escape/escape.yaml", o)
	}
	cm := find(t, objs, "ConfigMap")
	for _, v := range list(pod["volumes"]) {
		if get(v, "configMap", "name") == cm.name() && get(v, "configMap", "items", 0, "key") == "escape.yaml" &&
			get(v, "configMap", "items", 0, "path") == "escape.yaml" {
			for _, m := range list(ctr["volumeMounts"]) {
				if get(m, "name") == get(v, "name") && get(m, "mountPath") == "/etc/escape" {
					return
				}
			}
		}
	}
	t.Errorf("%s: ConfigMap %s key escape.yaml is not mounted as /etc/escape/escape.yaml", o, cm.name())
}

func toleratesEverything(pod map[string]any) bool {
	for _, tol := range list(pod["tolerations"]) {
		m := tol.(map[string]any)
		if m["operator"] == "Exists" && m["key"] == nil && m["effect"] == nil {
			return true
		}
	}
	return false
}

func configYAML(t *testing.T, objs []object) string {
	t.Helper()
	s, ok := get(find(t, objs, "ConfigMap").Value, "data", "escape.yaml").(string)
	if !ok {
		t.Fatal("ConfigMap has no escape.yaml")
	}
	return s
}

// planeConfig parses the ConfigMap's plane section with the plane's parser.
func planeConfig(t *testing.T, objs []object) plane.Config {
	t.Helper()
	cfg, err := plane.ParseConfig(strings.NewReader(configYAML(t, objs)))
	if err != nil {
		t.Fatalf("ConfigMap escape.yaml, plane section: %v", err)
	}
	return cfg
}

// sensorSection is the ConfigMap's sensor section as plain values (the
// sensor's own loader checks it in cmd/escape-sensor/deploy_config_test.go).
func sensorSection(t *testing.T, objs []object) map[string]any {
	t.Helper()
	var doc struct {
		Sensor map[string]any `yaml:"sensor"`
	}
	if err := yaml.Unmarshal([]byte(configYAML(t, objs)), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Sensor
}

func find(t *testing.T, objs []object, kind string) object {
	t.Helper()
	for _, o := range objs {
		if o.kind() == kind {
			return o
		}
	}
	t.Fatalf("no %s among the manifests", kind)
	return object{}
}

// get walks maps by key and slices by index; nil when absent.
func get(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			s, ok := v.([]any)
			if !ok || k >= len(s) {
				return nil
			}
			v = s[k]
		}
	}
	return v
}

func list(v any) []any { s, _ := v.([]any); return s }

func strs(v any) []string {
	var out []string
	for _, e := range list(v) {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

func deepCopy(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}
