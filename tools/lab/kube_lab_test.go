package lab_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// The fixed paths the kubelet and the CRI write at, bound from the lab's
// directory inside the node's host: on the machine's own file system they
// must not outlive the lab.
var kubeFixedPaths = []string{"/etc/kubernetes", "/var/lib/etcd", "/var/lib/kubelet", "/var/log/pods",
	"/var/log/containers", "/var/lib/cni", "/etc/cni/net.d"}

// The iptables chains the kubelet makes.
var kubeletChains = []string{"KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"}

// The kernel settings the kubelet wants (and, unprotected, sets).
var kubeletSysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

type kubeState struct {
	paths   map[string]bool
	chains  []string
	sysctls map[string]string
}

func kubeMachineState(t *testing.T) kubeState {
	t.Helper()
	st := kubeState{paths: map[string]bool{}, sysctls: map[string]string{}}
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	// kubectl's cache, by default under $HOME, the machine's own.
	for _, p := range append(kubeFixedPaths, filepath.Join(home, ".kube")) {
		_, err := os.Lstat(p)
		st.paths[p] = err == nil
	}
	st.chains = iptablesChains(t, exec.Command("iptables-save"))
	for _, s := range kubeletSysctls {
		v, err := os.ReadFile("/proc/sys/" + s)
		if err != nil {
			t.Fatal(err)
		}
		st.sysctls[s] = strings.TrimSpace(string(v))
	}
	return st
}

// iptablesChains lists the KUBE-* chains iptables-save (cmd) shows.
func iptablesChains(t *testing.T, cmd *exec.Cmd) []string {
	t.Helper()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	var chains []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, ":KUBE-") {
			chains = append(chains, strings.Fields(line[1:])[0])
		}
	}
	slices.Sort(chains)
	return slices.Compact(chains)
}

const kubeTestPods = `apiVersion: v1
kind: Pod
metadata:
  name: busybox
spec:
  restartPolicy: Never
  containers:
  - name: shell
    image: escape.local/busybox:latest
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "echo hello from the lab pod; while true; do sleep 1; done"]
---
apiVersion: v1
kind: Pod
metadata:
  name: redis
spec:
  restartPolicy: Never
  containers:
  - name: redis
    image: escape.local/redis:latest
    imagePullPolicy: Never
    command: ["/usr/bin/redis-server", "--port", "6379", "--protected-mode", "no", "--save", ""]
`

// TestKubernetesNode brings the lab up with its Kubernetes node in h1,
// runs a busybox and a redis pod on it, checks the node, the pods'
// addresses, logs, exec and pod-to-pod traffic, the containers in h1's
// containerd, and that nothing of the node lands in the root namespace;
// then takes the lab down and checks that the node left nothing behind.
func TestKubernetesNode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a lab with kubernetes: not run with -short")
	}
	before := kubeMachineState(t)
	start := time.Now()
	inv := labtest.Kubernetes(t)
	t.Logf("lab with kubernetes up in %s", time.Since(start).Round(time.Second))
	k := inv.Kubernetes
	if k == nil {
		t.Fatal("the inventory has no kubernetes node")
	}
	h1, _ := inv.Host(k.Host)
	if !strings.Contains(k.Server, h1.IP.String()) || !inv.Subnet.Contains(k.PodCIDR.Addr()) || !inv.Subnet.Contains(k.ServiceCIDR.Addr()) {
		t.Fatalf("node addresses outside the lab: server %s, pods %s, services %s", k.Server, k.PodCIDR, k.ServiceCIDR)
	}
	if _, err := os.Stat(k.Kubeconfig); err != nil {
		t.Fatalf("admin kubeconfig: %v", err)
	}

	// The node: Ready, on containerd 2.1, with the host's fabric address.
	var node struct {
		Status struct {
			Conditions []struct{ Type, Status string }
			Addresses  []struct{ Type, Address string }
			NodeInfo   struct{ ContainerRuntimeVersion, KubeletVersion string }
		}
	}
	if err := json.Unmarshal([]byte(labtest.Kubectl(t, inv, "", "get", "node", k.NodeName, "-o", "json")), &node); err != nil {
		t.Fatal(err)
	}
	ready := false
	for _, c := range node.Status.Conditions {
		ready = ready || (c.Type == "Ready" && c.Status == "True")
	}
	if !ready {
		t.Errorf("node %s not Ready: %+v", k.NodeName, node.Status.Conditions)
	}
	if v := node.Status.NodeInfo.ContainerRuntimeVersion; !strings.HasPrefix(v, "containerd://2.1") {
		t.Errorf("container runtime %q, want containerd://2.1.x", v)
	}
	if v := node.Status.NodeInfo.KubeletVersion; v != lab.DefaultKubeVersion {
		t.Errorf("kubelet %q, want %s", v, lab.DefaultKubeVersion)
	}
	if !slices.ContainsFunc(node.Status.Addresses, func(a struct{ Type, Address string }) bool {
		return a.Type == "InternalIP" && a.Address == h1.IP.String()
	}) {
		t.Errorf("node addresses %+v lack InternalIP %s", node.Status.Addresses, h1.IP)
	}

	// escape-lab kubectl: kubectl as the admin, inside h1, its status passed on.
	cli := filepath.Join(inv.BinDir, "escape-lab")
	if out, err := exec.Command(cli, "kubectl", "get", "node", k.NodeName, "-o",
		"jsonpath={.metadata.name} {.status.nodeInfo.kubeletVersion}").CombinedOutput(); err != nil || string(out) != k.NodeName+" "+lab.DefaultKubeVersion {
		t.Errorf("escape-lab kubectl get node: %v: %q", err, out)
	}
	if err := exec.Command(cli, "kubectl", "get", "pod", "no-such-pod").Run(); err == nil {
		t.Error("escape-lab kubectl get pod no-such-pod succeeded")
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("escape-lab kubectl does not pass on kubectl's status: %v", err)
	}

	// Two pods reach Running with addresses of the pod range.
	start = time.Now()
	// A reused lab may still have them from a failed run: pods are immutable.
	labtest.Kubectl(t, inv, "", "delete", "pod", "busybox", "redis", "--ignore-not-found", "--wait")
	labtest.Kubectl(t, inv, kubeTestPods, "apply", "-f", "-")
	labtest.Kubectl(t, inv, "", "wait", "--for=condition=Ready", "pod/busybox", "pod/redis", "--timeout=120s")
	t.Logf("pods ready in %s", time.Since(start).Round(100*time.Millisecond))
	ips := map[string]netip.Addr{}
	for _, pod := range []string{"busybox", "redis"} {
		phase := labtest.Kubectl(t, inv, "", "get", "pod", pod, "-o", "jsonpath={.status.phase} {.status.podIP}")
		f := strings.Fields(phase)
		if len(f) != 2 || f[0] != "Running" {
			t.Fatalf("pod %s: %q, want Running with an address", pod, phase)
		}
		ip, err := netip.ParseAddr(f[1])
		if err != nil || !k.PodCIDR.Contains(ip) {
			t.Fatalf("pod %s has address %q, want one of %s", pod, f[1], k.PodCIDR)
		}
		ips[pod] = ip
	}
	if ips["busybox"] == ips["redis"] {
		t.Fatalf("both pods have %s", ips["busybox"])
	}

	// Logs and exec go apiserver -> kubelet -> CRI.
	if out := labtest.Kubectl(t, inv, "", "logs", "busybox"); !strings.Contains(out, "hello from the lab pod") {
		t.Errorf("kubectl logs busybox: %q", out)
	}
	if out := labtest.Kubectl(t, inv, "", "exec", "redis", "--", "/usr/bin/redis-cli", "ping"); strings.TrimSpace(out) != "PONG" {
		t.Errorf("kubectl exec redis -- redis-cli ping: %q", out)
	}
	// Pod to pod over the node's pod network.
	out := labtest.Kubectl(t, inv, "", "exec", "busybox", "--", "sh", "-c",
		`printf 'SET lab kube\r\nGET lab\r\n' | nc -w 2 `+ips["redis"].String()+` 6379`)
	if !strings.Contains(out, "+OK") || !strings.Contains(out, "kube") {
		t.Errorf("busybox to redis at %s: %q", ips["redis"], out)
	}

	// The pods' containers in h1's containerd, namespace k8s.io, with the
	// kubelet's labels.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, err := containerd.New(h1.Containerd)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctrs, err := client.Containers(namespaces.WithNamespace(ctx, lab.KubeNamespace))
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, c := range ctrs {
		labels, err := c.Labels(namespaces.WithNamespace(ctx, lab.KubeNamespace))
		if err != nil {
			t.Fatal(err)
		}
		if labels["io.kubernetes.pod.namespace"] == "default" && labels["io.kubernetes.pod.uid"] != "" {
			found[labels["io.kubernetes.pod.name"]+"/"+labels["io.kubernetes.container.name"]] = true
		}
	}
	for _, want := range []string{"busybox/shell", "redis/redis"} {
		if !found[want] {
			t.Errorf("no container %s with io.kubernetes.* labels in h1's containerd (%s): found %v", want, lab.KubeNamespace, found)
		}
	}

	// The node's traces are in h1, not in the root namespace: its iptables
	// chains in h1's network namespace, its cgroups under the lab's
	// subtree, the machine's kernel settings untouched.
	inH1 := iptablesChains(t, lab.Command(ctx, inv, h1.Name, "iptables-save"))
	for _, c := range kubeletChains {
		if !slices.Contains(inH1, c) {
			t.Errorf("chain %s not in h1's network namespace (has %v)", c, inH1)
		}
	}
	during := kubeMachineState(t)
	for _, p := range kubeFixedPaths {
		if !during.paths[p] {
			t.Errorf("%s is not on the machine while up, where the node host binds it: the check after down would prove nothing", p)
		}
	}
	if !slices.Equal(during.chains, before.chains) {
		t.Errorf("KUBE-* chains of the root namespace changed while up: %v, before %v", during.chains, before.chains)
	}
	for s, v := range before.sysctls {
		if during.sysctls[s] != v {
			t.Errorf("the machine's %s changed to %s (was %s)", s, during.sysctls[s], v)
		}
	}
	kubepods := filepath.Join("/sys/fs/cgroup/memory", k.CgroupRoot, "kubepods")
	if _, err := os.Stat(kubepods); err != nil {
		t.Errorf("the kubelet's cgroups are not under the lab's subtree: %v", err)
	}
	if _, err := os.Stat(filepath.Join(k.Dir, "log", "containers")); err != nil {
		t.Errorf("/var/log/containers of h1 is not in the lab's directory: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(k.Dir, "log", "containers", "busybox_default_shell-*.log")); len(m) == 0 {
		t.Errorf("no busybox log link under %s/log/containers: the kubelet wrote it elsewhere", k.Dir)
	}
	if m, _ := filepath.Glob("/var/log/containers/busybox_default_shell-*.log"); len(m) > 0 {
		t.Errorf("the kubelet wrote to the machine's /var/log/containers: %v", m)
	}

	// The node's processes, to find again after down.
	compPIDs, compCmds := map[string]int{}, map[string]string{}
	for comp, pf := range k.PIDFiles {
		data, err := os.ReadFile(pf)
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			t.Fatalf("%s (pid %d) does not run: %v", comp, pid, err)
		}
		compPIDs[comp], compCmds[comp] = pid, string(cmd)
	}

	// Down takes everything.
	start = time.Now()
	if err := lab.Down(ctx, named()...); err != nil {
		t.Fatalf("down: %v", err)
	}
	t.Logf("down in %s", time.Since(start).Round(100*time.Millisecond))
	if left := lab.Leftovers(named()...); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	after := kubeMachineState(t)
	for p := range after.paths {
		if after.paths[p] && !before.paths[p] {
			t.Errorf("%s left on the machine's file system", p)
		}
	}
	if !slices.Equal(after.chains, before.chains) {
		t.Errorf("KUBE-* chains of the root namespace after down: %v, before %v", after.chains, before.chains)
	}
	for s, v := range before.sysctls {
		if after.sysctls[s] != v {
			t.Errorf("the machine's %s is %s after down (was %s)", s, after.sysctls[s], v)
		}
	}
	for comp, pid := range compPIDs {
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && string(cmd) == compCmds[comp] {
			t.Errorf("%s (pid %d) still runs", comp, pid)
		}
	}
	procs := snapshot(t, labName()).procs
	for pid := range ancestors() {
		// The command that runs the tests (make test's shell) names the
		// lab on its command line too: it is not the lab's.
		delete(procs, pid)
	}
	if len(procs) > 0 {
		t.Errorf("processes left: %v", procs)
	}
	if _, err := os.Stat(k.Dir); err == nil {
		t.Errorf("the node's directory %s is still there", k.Dir)
	}
	roots, _ := filepath.Glob("/sys/fs/cgroup/*" + k.CgroupRoot)
	if len(roots) > 0 {
		t.Errorf("the kubelet's cgroups are left: %v", roots)
	}
}

// labName is the lab labtest uses: $ESCAPE_LAB, else the default.
func labName() string {
	if name := os.Getenv("ESCAPE_LAB"); name != "" {
		return name
	}
	return lab.DefaultName
}

func named() []lab.Option { return []lab.Option{lab.WithName(labName())} }

// ancestors are the test process's parents up to init.
func ancestors() map[int]bool {
	out := map[int]bool{}
	for pid := os.Getppid(); pid > 1 && !out[pid]; {
		out[pid] = true
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			break
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after
		// its closing parenthesis.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 2 {
			break
		}
		if pid, err = strconv.Atoi(f[1]); err != nil {
			break
		}
	}
	return out
}
