package sensor_test

import (
	"strings"
	"testing"

	"github.com/escape-mtd/escape/sensor"
)

func TestWorkloadFromPodLabels(t *testing.T) {
	for _, tc := range []struct {
		pod    string
		labels map[string]string
		want   string
	}{
		{"web-7d9c5b8f6-x2k4q", map[string]string{"pod-template-hash": "7d9c5b8f6", "app": "web"}, "deployment/web"},
		{"my-api-v2-5f6d7c-abcde", map[string]string{"pod-template-hash": "5f6d7c"}, "deployment/my-api-v2"},
		{"db-0", map[string]string{"controller-revision-hash": "db-6b8f", "statefulset.kubernetes.io/pod-name": "db-0"}, "statefulset/db"},
		{"redis-cluster-12", map[string]string{"controller-revision-hash": "h", "statefulset.kubernetes.io/pod-name": "redis-cluster-12"}, "statefulset/redis-cluster"},
		{"agent-8xk2p", map[string]string{"controller-revision-hash": "6c7d", "pod-template-generation": "3"}, "daemonset/agent"},
		{"backup-x7k2p", map[string]string{"batch.kubernetes.io/job-name": "backup"}, "job/backup"},
		{"migrate-abcde", map[string]string{"job-name": "migrate"}, "job/migrate"},
		{"nightly-29043180-q8w2z", map[string]string{"job-name": "nightly-29043180"}, "cronjob/nightly"},
		{"release-2024-x1y2z", map[string]string{"job-name": "release-2024"}, "job/release-2024"}, // 4 digits: not a CronJob's
		// Labels that do not fit the name: the pod is its own workload.
		{"web", map[string]string{"pod-template-hash": "7d9c"}, "pod/web"},
		{"web-7d9c", map[string]string{"pod-template-hash": "7d9c"}, "pod/web-7d9c"},
		{"other-abcde", map[string]string{"job-name": "backup"}, "pod/other-abcde"},
		{"db-x", map[string]string{"controller-revision-hash": "h", "statefulset.kubernetes.io/pod-name": "db-x"}, "pod/db-x"},
		{"db-", map[string]string{"controller-revision-hash": "h", "pod-template-generation": "1"}, "pod/db-"},
		{"static-node1", nil, "pod/static-node1"},
		{"", map[string]string{"pod-template-hash": "x"}, ""},
	} {
		if got := sensor.Workload(tc.pod, tc.labels); got != tc.want {
			t.Errorf("Workload(%q, %v) = %q, want %q", tc.pod, tc.labels, got, tc.want)
		}
	}
}

// The identity label is the agent's word only in its own namespace; a pod
// is known by its workload, so replicas share a profile; anything else by
// namespace and id.
func TestIdentityIsBoundToWhatTheAgentObserved(t *testing.T) {
	victim := map[string]string{sensor.IdentityLabel: "redis"}
	own := sensor.Container{ID: "redis", Namespace: "escape", Labels: victim, Own: true}
	if got := own.Identity(); got != "redis" {
		t.Errorf("the agent's container: %q", got)
	}
	if _, ignored := own.IgnoredIdentity(); ignored {
		t.Error("the agent's own label reported as ignored")
	}
	imposter := sensor.Container{ID: "evil", Namespace: "default", Labels: victim}
	if got := imposter.Identity(); got != "default/evil" {
		t.Errorf("a container outside the agent's namespace claims %q", got)
	}
	if v, ignored := imposter.IgnoredIdentity(); !ignored || v != "redis" {
		t.Errorf("ignored label not reported: %q %v", v, ignored)
	}
	pod := func(name string) sensor.Container {
		return sensor.Container{ID: name + "-ctr", Namespace: "k8s.io", Labels: victim,
			Pod: &sensor.Pod{Namespace: "shop", Name: name, UID: "u-" + name, Container: "nginx", Owner: "deployment/web"}}
	}
	a, b := pod("web-7d9c-aaaaa"), pod("web-7d9c-bbbbb")
	if a.Identity() != "k8s/shop/deployment/web/nginx" || a.Identity() != b.Identity() {
		t.Errorf("replicas: %q and %q, want one workload identity", a.Identity(), b.Identity())
	}
	other := pod("web-7d9c-ccccc")
	other.Pod.Namespace = "attacker"
	if other.Identity() == a.Identity() {
		t.Error("a pod of another namespace shares the workload's identity")
	}
	if plain := (sensor.Container{ID: "x", Namespace: "default"}); plain.Identity() != "default/x" {
		t.Errorf("plain container: %q", plain.Identity())
	}
	if partial := (sensor.Container{ID: "x", Namespace: "k8s.io", Pod: &sensor.Pod{Name: "p"}}); partial.Identity() != "k8s.io/x" {
		t.Errorf("pod without namespace and owner: %q", partial.Identity())
	}
}

// Any pod name and labels give the pod's own workload or a controller's
// whose name is a prefix of the pod's (a CronJob's of its Job's): never a
// name the pod does not carry.
func FuzzWorkload(f *testing.F) {
	f.Add("web-7d9c-x2k4q", "pod-template-hash", "7d9c")
	f.Add("db-0", "statefulset.kubernetes.io/pod-name", "db-0")
	f.Add("nightly-29043180-q8w2z", "job-name", "nightly-29043180")
	f.Add("a--b-", "pod-template-hash", "")
	f.Fuzz(func(t *testing.T, pod, key, value string) {
		labels := map[string]string{key: value, "controller-revision-hash": value}
		got := sensor.Workload(pod, labels)
		if pod == "" {
			if got != "" {
				t.Fatalf("no pod name, workload %q", got)
			}
			return
		}
		kind, name, ok := strings.Cut(got, "/")
		if !ok || name == "" || !strings.HasPrefix(pod, name) {
			t.Fatalf("Workload(%q, %v) = %q", pod, labels, got)
		}
		switch kind {
		case "pod":
			if name != pod {
				t.Fatalf("pod workload %q of pod %q", got, pod)
			}
		case "deployment", "statefulset", "daemonset", "job", "cronjob":
			if len(name) >= len(pod) {
				t.Fatalf("controller %q is not a proper prefix of pod %q", got, pod)
			}
		default:
			t.Fatalf("kind %q", kind)
		}
	})
}
