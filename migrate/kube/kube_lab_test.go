package kube

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/tools/lab"
	"github.com/escape-mtd/escape/tools/lab/labtest"
)

// The lab test runs inside h1, the lab's Kubernetes node, as the node agent
// would: it reaches the kubelet at h1's address, the API server, and h1's
// containerd, and sees the kubelet's checkpoint directory.

const insideKubeletCheckpoints = "/var/lib/kubelet/checkpoints"

// TestKubernetesPodCheckpointAndReplace checkpoints a redis pod through the
// kubelet's API, keeps the archive as the pod's safe checkpoint, changes
// the pod's state, and replaces the pod with one restored from the
// checkpoint: the replacement runs with the checkpointed state, the kubelet
// leaves it alone (no restart), and the old pod is gone. It also checks the
// refusals: a caller without nodes/checkpoint, a pod that does not exist, a
// corrupt archive, each leaving everything as it was.
func TestKubernetesPodCheckpointAndReplace(t *testing.T) {
	inv := labtest.Kubernetes(t)
	if labtest.Child() == "" {
		rbac, err := os.ReadFile("../../deploy/kubernetes/pod-actions/rbac.yaml")
		if err != nil {
			t.Fatal(err)
		}
		labtest.InHost(t, inv, inv.Kubernetes.Host, envPodActionsRBAC+"="+string(rbac))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h, _ := inv.Host(inv.Kubernetes.Host)
	mustKubectl(t, inv, testAccounts, "apply", "-f", "-")
	mustKubectl(t, inv, os.Getenv(envPodActionsRBAC), "apply", "-f", "-")
	agent := credentials(t, inv, "escape-system", "escape-sensor")
	nobody := credentials(t, inv, "default", "escape-ckpt-nobody")

	name := fmt.Sprintf("ckpt-redis-%04x", rand.IntN(1<<16))
	mustKubectl(t, inv, redisPod(name), "apply", "-f", "-")
	t.Cleanup(func() {
		_, _ = kubectl(t, inv, "", "delete", "pod", "-l", "app="+name, "--ignore-not-found", "--wait=false")
	})
	mustKubectl(t, inv, "", "wait", "--for=condition=Ready", "pod/"+name, "--timeout=120s")
	if got := redisCLI(t, inv, name, "SET", "state", "safe"); got != "OK" {
		t.Fatalf("redis SET: %q", got)
	}

	endpoint := "https://" + h.IP.String() + ":10250"
	kubelet, err := NewKubelet(endpoint, agent)
	if err != nil {
		t.Fatal(err)
	}
	pc := PodContainer{Namespace: "default", Pod: name, Container: "redis"}

	// Refused: a caller without nodes/checkpoint, and a pod that is not there.
	deny, err := NewKubelet(endpoint, nobody)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deny.Checkpoint(ctx, pc.Namespace, pc.Pod, pc.Container, time.Minute); !errors.Is(err, ErrForbidden) {
		t.Errorf("checkpoint without nodes/checkpoint: want ErrForbidden, got %v", err)
	}
	if _, err := kubelet.Checkpoint(ctx, "default", name+"-absent", "redis", time.Minute); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("checkpoint of a pod that does not exist: want a not-found error, got %v", err)
	}

	started := time.Now()
	archive, err := kubelet.Checkpoint(ctx, pc.Namespace, pc.Pod, pc.Container, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubelet checkpoint took %v: %s", time.Since(started).Round(time.Millisecond), archive)
	if filepath.Dir(archive) != insideKubeletCheckpoints || !strings.HasPrefix(filepath.Base(archive), "checkpoint-"+name+"_default-redis-") {
		t.Errorf("archive %s is not where and how the kubelet names checkpoints", archive)
	}
	store, err := NewStore(filepath.Join(t.TempDir(), "store"), 2, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	kept, err := store.Keep(pc, archive)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(archive); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the kept archive is still in the kubelet's directory: %v", err)
	}

	// Refused: a corrupt archive is not kept and nothing kept is lost.
	corrupt := filepath.Join(insideKubeletCheckpoints, "checkpoint-"+name+"_default-redis-corrupt.tar")
	if err := os.WriteFile(corrupt, []byte("this is no tar archive, but it is long enough to look like one"), 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(corrupt)
	if _, err := store.Keep(pc, corrupt); !errors.Is(err, ErrBadArchive) {
		t.Errorf("keep a corrupt archive: want ErrBadArchive, got %v", err)
	}
	if _, err := os.Stat(corrupt); err != nil {
		t.Errorf("the refused archive was not left where it was: %v", err)
	}
	if newest, err := store.Newest(pc); err != nil || newest != kept {
		t.Errorf("after refusing a corrupt archive the newest is %q (%v), want %q", newest, err, kept)
	}

	// The pod is compromised: its state changes.
	if got := redisCLI(t, inv, name, "SET", "state", "compromised"); got != "OK" {
		t.Fatalf("redis SET: %q", got)
	}

	c, err := client.New(lab.InsideContainerd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	t.Cleanup(func() {
		// The pods first, then the images they run from.
		if _, err := kubectl(t, inv, "", "delete", "pod", "-l", "app="+name, "--ignore-not-found", "--wait", "--timeout=2m"); err != nil {
			t.Errorf("clean up the test's pods: %v", err)
		}
		removeCheckpointImages(t, c)
	})
	// Refused: a replacer whose credential has no pod rights touches nothing.
	denied, err := NewReplacer(inv.Kubernetes.NodeName, inv.Kubernetes.Server, nobody, c, store)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := denied.Replace(ctx, pc); !errors.Is(err, ErrForbidden) {
		t.Errorf("replace without pod rights: want ErrForbidden, got %v", err)
	}
	replacer, err := NewReplacer(inv.Kubernetes.NodeName, inv.Kubernetes.Server, agent, c, store)
	if err != nil {
		t.Fatal(err)
	}
	defer replacer.Close()
	if _, err := replacer.Replace(ctx, PodContainer{Namespace: "default", Pod: name + "-absent", Container: "redis"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("replace a pod that does not exist: want ErrNotFound, got %v", err)
	}
	if got := redisCLI(t, inv, name, "GET", "state"); got != "compromised" {
		t.Fatalf("the refusals changed the pod: state %q", got)
	}

	// Refused: an archive that rotted in the store after it was kept is
	// refused before anything is made of it.
	rotten := filepath.Join(t.TempDir(), "rotten.tar")
	if err := os.WriteFile(rotten, []byte("rotten"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ImportCheckpointImage(ctx, c, rotten, "escape.local/checkpoint/default/rotten:1", "redis", DefaultMirrorAddr); !errors.Is(err, ErrBadArchive) {
		t.Errorf("image of a rotten archive: want ErrBadArchive, got %v", err)
	}
	if _, err := c.ImageService().Get(namespaces.WithNamespace(ctx, CRINamespace), "escape.local/checkpoint/default/rotten:1"); err == nil {
		t.Error("a rotten archive became an image")
	}
	// A checkpoint whose CRIU images do not restore: the replacement never
	// runs, so it is deleted, and the compromised pod is left as it was
	// (the plane then alerts, and decides).
	broken := brokenCRIUArchive(t, kept)
	brokenStore, err := NewStore(filepath.Join(t.TempDir(), "broken"), 1, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := brokenStore.Keep(pc, broken); err != nil {
		t.Fatal(err)
	}
	failing, err := NewReplacer(inv.Kubernetes.NodeName, inv.Kubernetes.Server, agent, c, brokenStore, WithRunningWait(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := failing.Replace(ctx, pc); err == nil || !strings.Contains(err.Error(), "did not run from the checkpoint") || !strings.Contains(err.Error(), "criu") {
		t.Errorf("replace from a checkpoint that does not restore: want CRIU's failure, got %v", err)
	} else {
		t.Logf("refused as it should be: %.300s", err)
	}
	_ = failing.Close()
	if pods := mustKubectl(t, inv, "", "get", "pods", "-l", "app="+name, "-o", "jsonpath={.items[*].metadata.name}"); pods != name {
		t.Errorf("after a failed replacement the pods are %q, want only %q", pods, name)
	}
	if got := redisCLI(t, inv, name, "GET", "state"); got != "compromised" {
		t.Fatalf("a failed replacement changed the pod: state %q", got)
	}
	// containerd leaks the restore's view mount when a restore fails before
	// CRIU runs (docs/kubernetes.md); one that fails in CRIU must leave none.
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err != nil || strings.Contains(string(mi), " /tmp/checkpoint") {
		t.Errorf("a failed restore left a mount of containerd's in the host's /tmp (%v)", err)
	}

	started = time.Now()
	repl, err := replacer.Replace(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("replace (image, create, running, delete) took %v: %s", time.Since(started).Round(time.Millisecond), repl)
	if got := redisCLI(t, inv, repl, "GET", "state"); got != "safe" {
		t.Errorf("the replacement's state is %q, want the checkpointed %q", got, "safe")
	}
	if got := mustKubectl(t, inv, "", "get", "pod", repl, "-o", `jsonpath={.metadata.annotations.escape\.mtd/restored-from}`); got != name {
		t.Errorf("the replacement says it was restored from %q, want %q", got, name)
	}
	// The old pod is deleted through the API server.
	if _, err := kubectl(t, inv, "", "wait", "--for=delete", "pod/"+name, "--timeout=120s"); err != nil {
		t.Errorf("the compromised pod is not gone: %v", err)
	}
	// The kubelet does not fight the replacement: it keeps running, never
	// restarted, for a while (a fought container restarts within seconds).
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
		st := mustKubectl(t, inv, "", "get", "pod", repl, "-o", `jsonpath={.status.phase} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}`)
		if st != "Running 0 true" {
			t.Fatalf("the replacement is %q, want Running, 0 restarts, ready", st)
		}
	}
	if got := redisCLI(t, inv, repl, "GET", "state"); got != "safe" {
		t.Errorf("after 15 s the replacement's state is %q, want %q", got, "safe")
	}

	// The kubelet restarts the replacement's container the way it always
	// does, from the pod's image: the checkpoint, restored again.
	_, _ = kubectl(t, inv, "", "exec", repl, "--", "/usr/bin/redis-cli", "SHUTDOWN", "NOSAVE")
	var st string
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		st = mustKubectl(t, inv, "", "get", "pod", repl, "-o", `jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}`)
		if st == "1 true" {
			break
		}
	}
	if st != "1 true" {
		t.Fatalf("after its process exited the replacement is %q, want restarted once and ready", st)
	}
	if got := redisCLI(t, inv, repl, "GET", "state"); got != "safe" {
		t.Errorf("the kubelet's restart of the replacement has state %q, want the checkpointed %q", got, "safe")
	}
}

// TestKubernetesPodActionsThroughTheAgent asks h1's real agent (the lab's
// escape-sensor, with a kubernetes section in its settings), over mutual
// TLS as the plane, to checkpoint a redis pod and then to replace it: the
// plane's path to the pod actions, end to end.
func TestKubernetesPodActionsThroughTheAgent(t *testing.T) {
	inv := labtest.Kubernetes(t)
	k := inv.Kubernetes
	h, _ := inv.Host(k.Host)
	rbac, err := os.ReadFile("../../deploy/kubernetes/pod-actions/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	labtest.Kubectl(t, inv, testAccounts, "apply", "-f", "-")
	labtest.Kubectl(t, inv, string(rbac), "apply", "-f", "-")
	tok := strings.TrimSpace(labtest.Kubectl(t, inv, "", "create", "token", "-n", "escape-system", "escape-sensor", "--duration", "1h"))
	name := fmt.Sprintf("agent-redis-%04x", rand.IntN(1<<16))
	tokDir := filepath.Join(h.Dir, "state", "tests")
	if err := os.MkdirAll(tokDir, 0o755); err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(tokDir, name+".token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(tokFile) })
	labtest.AgentSettings(t, inv, h.Name, func(agent map[string]any) {
		agent["kubernetes"] = map[string]any{
			"kubelet":    "https://" + h.IP.String() + ":10250",
			"api_server": k.Server,
			"token_file": filepath.Join(labtest.TestsDir, name+".token"),
			"ca_file":    lab.InsideKubeDir + "/pki/ca.crt",
		}
	})
	c, err := client.New(h.Containerd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	t.Cleanup(func() {
		if _, err := labtest.KubectlErr(inv, "", "delete", "pod", "-l", "app="+name, "--ignore-not-found", "--wait", "--timeout=2m"); err != nil {
			t.Errorf("clean up the test's pods: %v", err)
		}
		removeCheckpointImages(t, c)
	})
	labtest.Kubectl(t, inv, redisPod(name), "apply", "-f", "-")
	labtest.Kubectl(t, inv, "", "wait", "--for=condition=Ready", "pod/"+name, "--timeout=120s")
	cli := func(pod string, args ...string) string {
		return strings.TrimSpace(labtest.Kubectl(t, inv, "", append([]string{"exec", pod, "--", "/usr/bin/redis-cli"}, args...)...))
	}
	if got := cli(name, "SET", "state", "safe"); got != "OK" {
		t.Fatalf("redis SET: %q", got)
	}

	agent := labtest.AgentClient(t, inv, h.Name)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	pod := migrate.Pod{Namespace: "default", Name: name, Container: "redis"}
	if _, err := agent.CheckpointPod(ctx, migrate.Pod{Namespace: "default", Name: name + "-absent", Container: "redis"}); err == nil {
		t.Error("the agent checkpointed a pod that does not exist")
	}
	if _, err := agent.ReplacePod(ctx, migrate.Pod{Namespace: "default", Name: name + "-absent", Container: "redis"}); !errors.Is(err, migrate.ErrPodNotFound) {
		t.Errorf("replace a pod that does not exist, through the agent: want ErrPodNotFound, got %v", err)
	}
	ck, err := agent.CheckpointPod(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	if ck.Bytes <= 0 || ck.CheckpointedAt.IsZero() || !strings.HasPrefix(ck.Archive, "/") {
		t.Errorf("checkpoint %+v", ck)
	}
	if got := cli(name, "SET", "state", "compromised"); got != "OK" {
		t.Fatalf("redis SET: %q", got)
	}
	repl, err := agent.ReplacePod(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	if got := cli(repl, "GET", "state"); got != "safe" {
		t.Errorf("the replacement's state is %q, want the checkpointed %q", got, "safe")
	}
	if _, err := labtest.KubectlErr(inv, "", "wait", "--for=delete", "pod/"+name, "--timeout=120s"); err != nil {
		t.Errorf("the compromised pod is not gone: %v", err)
	}
	if st := strings.TrimSpace(labtest.Kubectl(t, inv, "", "get", "pod", repl, "-o", `jsonpath={.status.phase} {.status.containerStatuses[0].restartCount}`)); st != "Running 0" {
		t.Errorf("the replacement is %q, want Running with no restart", st)
	}
}
