package kubernetes

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/escape-mtd/escape/internal/mtls"
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
		var errs []error
		if rbacKinds[o.kind()] {
			// No RBAC schema in testdata: a strict typed decode instead.
			errs = checkRBAC(o)
		} else {
			errs = v.validate(o)
		}
		for _, err := range errs {
			t.Error(err)
		}
		if !clusterScoped[o.kind()] {
			if ns, _ := get(o.Value, "metadata", "namespace").(string); ns != "escape-system" {
				t.Errorf("%s: namespace %q, want escape-system", o, ns)
			}
		}
	}
	// The second Role and RoleBinding, and the cluster's, are the plane's
	// on Kubernetes (30-plane.yaml: nodes, its Lease, Events).
	want := map[string]int{"Namespace": 1, "ConfigMap": 1, "ServiceAccount": 2, "Role": 2, "RoleBinding": 2,
		"ClusterRole": 1, "ClusterRoleBinding": 1,
		"DaemonSet": 1, "Deployment": 1, "PersistentVolumeClaim": 1, "Service": 1}
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
		{"misspelt field deep in a mount", "DaemonSet", func(m map[string]any) {
			netns := get(m, "spec", "template", "spec", "containers", 0, "volumeMounts", 6).(map[string]any)
			netns["mountPropogation"] = netns["mountPropagation"]
			delete(netns, "mountPropagation")
		}, `spec.template.spec.containers[0].volumeMounts[6].mountPropogation: unknown field`},
		{"sidecar with a misspelt restart policy", "DaemonSet", func(m map[string]any) {
			sc := get(m, "spec", "template", "spec", "initContainers", 0).(map[string]any)
			sc["restartpolicy"] = sc["restartPolicy"]
			delete(sc, "restartPolicy")
		}, `spec.template.spec.initContainers[0].restartpolicy: unknown field`},
		{"Bidirectional without privilege", "DaemonSet", func(m map[string]any) {
			get(m, "spec", "template", "spec", "containers", 0, "securityContext").(map[string]any)["privileged"] = false
		}, "Bidirectional mount propagation is available only to privileged containers"},
		{"Service port as a word", "Service", func(m map[string]any) {
			get(m, "spec", "ports", 0).(map[string]any)["port"] = "api"
		}, `spec.ports[0].port: got string, want integer`},
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
		t.Errorf("%s: the sensor and agent must be privileged (bpf, perf, cgroups, netns, CRIU)", ds)
	}
	if !toleratesEverything(pod) {
		t.Errorf("%s: needs a toleration {operator: Exists} to run on every node", ds)
	}
	checkResources(t, ds, ctr)
	checkServiceAccount(t, objs, ds, pod)
	checkConfigVolume(t, objs, ds, pod, ctr)
	mounts := hostMounts(t, ds, pod, ctr)
	for p, w := range map[string]mount{
		"/sys/kernel/btf":        {readOnly: true},
		"/sys/fs/cgroup":         {},
		"/run/containerd":        {propagation: "HostToContainer"},
		"/var/lib/containerd":    {propagation: "HostToContainer"},
		"/run/netns":             {propagation: "Bidirectional"},
		"/var/lib/escape-agent":  {propagation: "Bidirectional"},
		"/var/lib/escape-sensor": {},
		"/run/escape-sensor":     {},
	} {
		if m, ok := mounts[p]; !ok {
			t.Errorf("%s: host path %s is not mounted at the same path", ds, p)
		} else if m != w {
			t.Errorf("%s: %s mounted %+v, want %+v", ds, p, m, w)
		}
	}
	cfg := sensorSection(t, objs)
	listen := netip.MustParseAddrPort(cfg["listen"].(string))
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		checkProbe(t, ds, ctr, probe, listen)
	}
	for _, key := range []string{"profiles", "control", "containerd"} {
		p, _ := cfg[key].(string)
		if p == "" || !under(mounts, p, key != "containerd") {
			t.Errorf("%s: sensor.%s %q is not on a host path mounted at the same path", ds, key, p)
		}
	}
	if args := strings.Join(strs(ctr["args"]), " "); !strings.Contains(args, "--host $(NODE_NAME)") {
		t.Errorf("%s: args %q: the sensor's --host must be the node name", ds, args)
	}
	env := envOf(ctr)
	if env["NODE_NAME"] != "spec.nodeName" || env["HOST_IP"] != "status.hostIP" {
		t.Errorf("%s: env %v: want NODE_NAME from spec.nodeName and HOST_IP from status.hostIP", ds, env)
	}
	ag := agentSection(t, objs)
	if ag.Listen != "${HOST_IP}:7443" {
		t.Errorf("agent.listen %q, want ${HOST_IP}:7443 (the node's address, from the environment)", ag.Listen)
	}
	if !under(mounts, ag.State+"/images", true) || mounts[ag.State].propagation != "Bidirectional" {
		t.Errorf("%s: agent.state %q is not a Bidirectional host path mounted at the same path", ds, ag.State)
	}
	// The certificate: the agent reads it from the tls volume, which the
	// cert-sync sidecar writes from the node's Secret.
	all := volumeMounts(pod, ctr)
	for key, f := range map[string]string{"ca": ag.TLS.CA, "cert": ag.TLS.Cert, "key": ag.TLS.Key} {
		if v, ok := all[path.Dir(f)]; !ok || v.volume != "tls" || !v.readOnly {
			t.Errorf("%s: agent.tls.%s %q is not on the read-only tls volume (%+v)", ds, key, f, v)
		}
	}
	if want := mtls.SecretFiles(path.Dir(ag.TLS.Cert)); (mtls.Files{CA: ag.TLS.CA, Cert: ag.TLS.Cert, Key: ag.TLS.Key}) != want {
		t.Errorf("agent.tls %+v: want cert-manager's Secret layout %+v", ag.TLS, want)
	}
	if _, ok := all["/var/run/secrets/kubernetes.io/serviceaccount"]; ok {
		t.Errorf("%s: the agent container must not get an API token", ds)
	}
	sc := get(pod, "initContainers", 0).(map[string]any)
	if sc["name"] != "cert-sync" || sc["restartPolicy"] != "Always" || get(sc, "startupProbe", "exec") == nil {
		t.Errorf("%s: initContainers[0] must be the cert-sync native sidecar (restartPolicy Always, an exec startup probe)", ds)
	}
	if env := envOf(sc); env["NODE_NAME"] != "spec.nodeName" {
		t.Errorf("%s: cert-sync needs NODE_NAME from spec.nodeName", ds)
	}
	script := strings.Join(strs(sc["args"]), "\n")
	for _, want := range []string{`secret="escape-agent-$NODE_NAME"`, `dir=/etc/escape-tls`, "ca.crt", "tls.crt", "tls.key", "mv -f"} {
		if !strings.Contains(script, want) {
			t.Errorf("%s: cert-sync script lacks %q", ds, want)
		}
	}
	scMounts := volumeMounts(pod, sc)
	if v := scMounts[path.Dir(ag.TLS.Cert)]; v.volume != "tls" || v.readOnly {
		t.Errorf("%s: cert-sync must write the tls volume at %s (%+v)", ds, path.Dir(ag.TLS.Cert), v)
	}
	if v := scMounts["/var/run/secrets/kubernetes.io/serviceaccount"]; v.volume == "" {
		t.Errorf("%s: cert-sync has no API token mounted", ds)
	}
	for _, v := range list(pod["volumes"]) {
		if get(v, "name") == "tls" && get(v, "emptyDir", "medium") != "Memory" {
			t.Errorf("%s: the tls volume must be an in-memory emptyDir (the key never touches the node's disk)", ds)
		}
	}
}

// The Role lets the sidecar read exactly the agent Secrets of the plane's
// hosts, and is bound to the DaemonSet's ServiceAccount.
func TestManifestAgentSecretsRole(t *testing.T) {
	objs := loadManifests(t, ".")
	role, rb, ds := find(t, objs, "Role"), find(t, objs, "RoleBinding"), find(t, objs, "DaemonSet")
	var names []string
	for _, h := range planeConfig(t, objs).Hosts {
		names = append(names, "escape-agent-"+h.Name)
	}
	rules := list(get(role.Value, "rules"))
	if len(rules) != 1 {
		t.Fatalf("%s: %d rules, want 1", role, len(rules))
	}
	r := rules[0]
	if strings.Join(strs(get(r, "verbs")), ",") != "get" || strings.Join(strs(get(r, "resources")), ",") != "secrets" {
		t.Errorf("%s: rule %v: want get on secrets only", role, r)
	}
	if got := strs(get(r, "resourceNames")); strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s: resourceNames %v, want the agent Secrets of plane.hosts %v", role, got, names)
	}
	sa, _ := get(ds.Value, "spec", "template", "spec", "serviceAccountName").(string)
	if get(rb.Value, "roleRef", "name") != role.name() || get(rb.Value, "subjects", 0, "name") != sa {
		t.Errorf("%s: must bind %s to the DaemonSet's ServiceAccount %s", rb, role.name(), sa)
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
	// The plane holds no host path and needs no privilege.
	for _, k := range []string{"hostPID", "hostNetwork", "hostIPC"} {
		if pod[k] == true {
			t.Errorf("%s: %s: the plane reaches agents over TCP, it needs no host namespace", d, k)
		}
	}
	for _, v := range list(pod["volumes"]) {
		if get(v, "hostPath") != nil {
			t.Errorf("%s: volume %v is a hostPath: the plane holds no host path", d, get(v, "name"))
		}
	}
	if get(ctr, "securityContext", "privileged") == true || get(ctr, "securityContext", "allowPrivilegeEscalation") != false ||
		strings.Join(strs(get(ctr, "securityContext", "capabilities", "drop")), ",") != "ALL" {
		t.Errorf("%s: the plane must run unprivileged with every capability dropped", d)
	}
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
	cfg := planeConfig(t, objs)
	mounts := volumeMounts(pod, ctr)
	vol := func(file string) volumeMount {
		for dir := path.Dir(file); dir != "/"; dir = path.Dir(dir) {
			if m, ok := mounts[dir]; ok {
				return m
			}
		}
		return volumeMount{}
	}
	for key, want := range map[string]string{cfg.State: "persistentVolumeClaim", cfg.Audit: "persistentVolumeClaim",
		cfg.Socket: "emptyDir", cfg.TLS.CA: "secret", cfg.TLS.Cert: "secret", cfg.TLS.Key: "secret"} {
		m := vol(key)
		if m.kind != want || (m.readOnly && want != "secret") {
			t.Errorf("%s: %s is on %+v, want a mounted %s volume", d, key, m, want)
		}
	}
	if m := vol(cfg.TLS.Cert); m.secret != "escape-plane-tls" {
		t.Errorf("%s: plane.tls is on secret %q, want escape-plane-tls", d, m.secret)
	}
	if want := mtls.SecretFiles(path.Dir(cfg.TLS.Cert)); (mtls.Files{CA: cfg.TLS.CA, Cert: cfg.TLS.Cert, Key: cfg.TLS.Key}) != want {
		t.Errorf("plane.tls %+v: want cert-manager's Secret layout %+v", cfg.TLS, want)
	}
	if cfg.Socket != plane.DefaultConfig().Socket {
		t.Errorf("plane.socket %q differs from the default %q that the probes' `escape-plane status` uses", cfg.Socket, plane.DefaultConfig().Socket)
	}
	for _, probe := range []string{"startupProbe", "livenessProbe", "readinessProbe"} {
		if c := strings.Join(strs(get(ctr, probe, "exec", "command")), " "); !strings.HasPrefix(c, "/usr/local/bin/escape-plane ") || !strings.HasSuffix(c, " status") {
			t.Errorf("%s: %s runs %q, want escape-plane status over the local socket", d, probe, c)
		}
	}
	// The startup probe must outlast the settling of the previous run's work.
	period, _ := get(ctr, "startupProbe", "periodSeconds").(json.Number)
	fails, _ := get(ctr, "startupProbe", "failureThreshold").(json.Number)
	p, _ := period.Int64()
	f, _ := fails.Int64()
	if time.Duration(p*f)*time.Second < 10*time.Minute {
		t.Errorf("%s: startupProbe allows %ds, want >= 600s", d, p*f)
	}
	// The Service reaches the API port the configuration listens on.
	api := netip.MustParseAddrPort(cfg.API)
	svc := find(t, objs, "Service")
	if get(svc.Value, "spec", "selector", "app.kubernetes.io/name") != get(d.Value, "spec", "selector", "matchLabels", "app.kubernetes.io/name") {
		t.Errorf("%s: selector does not select the plane's pods", svc)
	}
	target, _ := get(svc.Value, "spec", "ports", 0, "targetPort").(string)
	found := false
	for _, cp := range list(ctr["ports"]) {
		if n, _ := get(cp, "containerPort").(json.Number); get(cp, "name") == target && string(n) == strconv.Itoa(int(api.Port())) {
			found = true
		}
	}
	if !found {
		t.Errorf("%s: targetPort %q is not the container port %d of plane.api", svc, target, api.Port())
	}
	pvc := find(t, objs, "PersistentVolumeClaim")
	if m := vol(cfg.State); m.claim != pvc.name() {
		t.Errorf("%s: state on claim %q, want %s", d, m.claim, pvc.name())
	}
}

// Every host of the plane is dialled on the port the agents listen on.
func TestManifestPlaneReachesAgents(t *testing.T) {
	objs := loadManifests(t, ".")
	ag := agentSection(t, objs)
	_, port, ok := strings.Cut(ag.Listen, "}:")
	if !ok {
		t.Fatalf("agent.listen %q", ag.Listen)
	}
	for _, h := range planeConfig(t, objs).Hosts {
		if ap, err := netip.ParseAddrPort(h.Agent); err != nil || strconv.Itoa(int(ap.Port())) != port {
			t.Errorf("plane.hosts %s: agent %q, want the node's InternalIP and port %s", h.Name, h.Agent, port)
		}
	}
	ctr := get(find(t, objs, "DaemonSet").Value, "spec", "template", "spec", "containers", 0)
	if n, _ := get(ctr, "ports", 0, "containerPort").(json.Number); string(n) != port {
		t.Errorf("DaemonSet: containerPort %v, want the agent's %s", n, port)
	}
}

// The cert-manager resources (a subdirectory, applied only where
// cert-manager runs) make the identities the daemons check, into the
// Secrets the manifests read.
func TestManifestCertManagerCertificates(t *testing.T) {
	objs := loadManifests(t, "cert-manager")
	main := loadManifests(t, ".")
	hosts := map[string]bool{}
	for _, h := range planeConfig(t, main).Hosts {
		hosts[h.Name] = true
	}
	issuers := map[string]bool{}
	for _, o := range objs {
		if o.kind() == "Issuer" {
			if get(o.Value, "spec", "ca", "secretName") == nil {
				t.Errorf("%s: want a CA issuer", o)
			}
			issuers[o.name()] = true
		}
	}
	roles := map[mtls.Role]int{}
	for _, o := range objs {
		if o.kind() == "Issuer" {
			continue
		}
		c, err := decodeCertificate(o)
		if err != nil {
			t.Error(err)
			continue
		}
		if ns, _ := get(o.Value, "metadata", "namespace").(string); ns != "escape-system" {
			t.Errorf("%s: namespace %q", o, ns)
		}
		if len(c.Spec.URIs) != 1 {
			t.Errorf("%s: %d URI SANs, want exactly one identity", o, len(c.Spec.URIs))
			continue
		}
		id, err := mtls.ParseIdentity(c.Spec.URIs[0])
		if err != nil {
			t.Errorf("%s: %v", o, err)
			continue
		}
		roles[id.Role]++
		usages := strings.Join(c.Spec.Usages, ",")
		if !strings.Contains(usages, "client auth") || (id.Role != mtls.RoleOperator) != strings.Contains(usages, "server auth") {
			t.Errorf("%s: usages %q: every identity is a client; agents and the plane serve too, operators do not", o, usages)
		}
		if c.Spec.PrivateKey.Algorithm != "ECDSA" || c.Spec.PrivateKey.Size != 256 {
			t.Errorf("%s: private key %+v, want ECDSA P-256", o, c.Spec.PrivateKey)
		}
		if !issuers[c.Spec.IssuerRef.Name] || c.Spec.IssuerRef.Kind != "Issuer" {
			t.Errorf("%s: issuerRef %+v is not the Issuer here", o, c.Spec.IssuerRef)
		}
		switch id.Role {
		case mtls.RoleAgent:
			// The node name ties them together.
			if c.Spec.SecretName != "escape-agent-"+id.Name || o.name() != c.Spec.SecretName ||
				strings.Join(c.Spec.DNSNames, ",") != id.Name || get(o.Value, "metadata", "labels", "escape.mtd/node") != id.Name {
				t.Errorf("%s: an agent's Certificate, Secret, DNS name and label must all name its node %s", o, id.Name)
			}
			if !hosts[id.Name] {
				t.Errorf("%s: node %s is not in plane.hosts", o, id.Name)
			}
			delete(hosts, id.Name)
		case mtls.RolePlane:
			if id.Name != "plane" || c.Spec.SecretName != "escape-plane-tls" {
				t.Errorf("%s: the plane is plane/plane in Secret escape-plane-tls (the CLI and the Deployment expect them)", o)
			}
		}
	}
	for h := range hosts {
		t.Errorf("plane.hosts %s has no agent Certificate", h)
	}
	if roles[mtls.RolePlane] != 1 || roles[mtls.RoleOperator] < 1 {
		t.Errorf("identities %v: want one plane and an operator example", roles)
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

// volumeMount is one of a container's mounts and the volume behind it.
type volumeMount struct {
	volume   string
	readOnly bool
	kind     string // hostPath, emptyDir, secret, configMap, persistentVolumeClaim, projected
	secret   string // a secret volume's secretName
	claim    string // a persistentVolumeClaim's claimName
}

// volumeMounts maps mount path -> mount, for every mount of ctr.
func volumeMounts(pod, ctr map[string]any) map[string]volumeMount {
	vols := map[string]map[string]any{}
	for _, v := range list(pod["volumes"]) {
		vm, _ := v.(map[string]any)
		name, _ := vm["name"].(string)
		vols[name] = vm
	}
	out := map[string]volumeMount{}
	for _, m := range list(ctr["volumeMounts"]) {
		name, _ := get(m, "name").(string)
		mp, _ := get(m, "mountPath").(string)
		ro, _ := get(m, "readOnly").(bool)
		vm := volumeMount{volume: name, readOnly: ro}
		for k := range vols[name] {
			if k != "name" {
				vm.kind = k
			}
		}
		vm.secret, _ = get(vols[name], "secret", "secretName").(string)
		vm.claim, _ = get(vols[name], "persistentVolumeClaim", "claimName").(string)
		out[mp] = vm
	}
	return out
}

// envOf maps a container's variables to the fieldPath they come from.
func envOf(ctr map[string]any) map[string]string {
	out := map[string]string{}
	for _, e := range list(ctr["env"]) {
		name, _ := get(e, "name").(string)
		fp, _ := get(e, "valueFrom", "fieldRef", "fieldPath").(string)
		out[name] = fp
	}
	return out
}

// agentConfig is the ConfigMap's agent section as this test needs it (the
// agent's own loader checks it in cmd/escape-sensor/deploy_config_test.go).
type agentConfig struct {
	Listen string `yaml:"listen"`
	State  string `yaml:"state"`
	TLS    struct {
		CA   string `yaml:"ca"`
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
}

func agentSection(t *testing.T, objs []object) agentConfig {
	t.Helper()
	var doc struct {
		Agent agentConfig `yaml:"agent"`
	}
	if err := yaml.Unmarshal([]byte(configYAML(t, objs)), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Agent
}

// rbacKinds have no schema in testdata/schemas (core/v1 and apps/v1 only).
var rbacKinds = map[string]bool{"Role": true, "RoleBinding": true, "ClusterRole": true, "ClusterRoleBinding": true}

// clusterScoped kinds have no namespace.
var clusterScoped = map[string]bool{"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true}

type objectMeta struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
}

// checkRBAC decodes a Role or RoleBinding strictly into the fields of
// rbac.authorization.k8s.io/v1 these manifests use, and checks what the
// API server requires of them.
func checkRBAC(o object) []error {
	if o.Value["apiVersion"] != "rbac.authorization.k8s.io/v1" {
		return []error{fmt.Errorf("%s: apiVersion %v, want rbac.authorization.k8s.io/v1", o, o.Value["apiVersion"])}
	}
	var errs []error
	// A ClusterRole is a Role without a namespace, and so on.
	if err := strictDecode(o, rbacTypes[strings.TrimPrefix(o.kind(), "Cluster")]); err != nil {
		errs = append(errs, err)
	}
	return append(errs, serverRules(o)...)
}

var rbacTypes = map[string]any{
	"Role": &struct {
		APIVersion string     `json:"apiVersion"`
		Kind       string     `json:"kind"`
		Metadata   objectMeta `json:"metadata"`
		Rules      []struct {
			APIGroups     []string `json:"apiGroups"`
			Resources     []string `json:"resources"`
			Verbs         []string `json:"verbs"`
			ResourceNames []string `json:"resourceNames"`
		} `json:"rules"`
	}{},
	"RoleBinding": &struct {
		APIVersion string     `json:"apiVersion"`
		Kind       string     `json:"kind"`
		Metadata   objectMeta `json:"metadata"`
		RoleRef    struct {
			APIGroup string `json:"apiGroup"`
			Kind     string `json:"kind"`
			Name     string `json:"name"`
		} `json:"roleRef"`
		Subjects []struct {
			Kind      string `json:"kind"`
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"subjects"`
	}{},
}

// certificate is the part of cert-manager.io/v1 Certificate these
// manifests use; unknown fields are errors.
type certificate struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		SecretName  string   `json:"secretName"`
		CommonName  string   `json:"commonName"`
		URIs        []string `json:"uris"`
		DNSNames    []string `json:"dnsNames"`
		IPAddresses []string `json:"ipAddresses"`
		Usages      []string `json:"usages"`
		Duration    string   `json:"duration"`
		RenewBefore string   `json:"renewBefore"`
		PrivateKey  struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy"`
		} `json:"privateKey"`
		IssuerRef struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

func decodeCertificate(o object) (certificate, error) {
	var c certificate
	if o.Value["apiVersion"] != "cert-manager.io/v1" || o.kind() != "Certificate" {
		return c, fmt.Errorf("%s: want cert-manager.io/v1 Certificate or Issuer", o)
	}
	if err := strictDecode(o, &c); err != nil {
		return c, err
	}
	for _, d := range []string{c.Spec.Duration, c.Spec.RenewBefore} {
		if _, err := time.ParseDuration(d); err != nil {
			return c, fmt.Errorf("%s: duration %q: %v", o, d, err)
		}
	}
	return c, nil
}

// strictDecode decodes o into v, refusing fields v does not have.
func strictDecode(o object, v any) error {
	b, err := json.Marshal(o.Value)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %v", o, err)
	}
	return nil
}
