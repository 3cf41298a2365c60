package kube_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/plane/kube"
)

// applyPlaneRBAC creates the RBAC objects of deploy/kubernetes/30-plane.yaml.
func applyPlaneRBAC(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	data, err := os.ReadFile("../../deploy/kubernetes/30-plane.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "escape-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	n := 0
	for {
		var raw struct {
			metav1.TypeMeta `json:",inline"`
		}
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &raw); err != nil {
			t.Fatal(err)
		}
		switch raw.Kind {
		case "ClusterRole":
			var o rbacv1.ClusterRole
			decodeInto(t, b, &o)
			_, err = cs.RbacV1().ClusterRoles().Create(ctx, &o, metav1.CreateOptions{})
		case "ClusterRoleBinding":
			var o rbacv1.ClusterRoleBinding
			decodeInto(t, b, &o)
			_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &o, metav1.CreateOptions{})
		case "Role":
			var o rbacv1.Role
			decodeInto(t, b, &o)
			_, err = cs.RbacV1().Roles(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
		case "RoleBinding":
			var o rbacv1.RoleBinding
			decodeInto(t, b, &o)
			_, err = cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
		default:
			continue
		}
		if err != nil {
			t.Fatalf("create %s: %v", raw.Kind, err)
		}
		n++
	}
	if n != 4 {
		t.Fatalf("%d RBAC objects in 30-plane.yaml, want 4", n)
	}
}

func decodeInto(t *testing.T, b []byte, into any) {
	t.Helper()
	if err := json.Unmarshal(b, into); err != nil {
		t.Fatal(err)
	}
}

// The RBAC of deploy/kubernetes/30-plane.yaml is enough for the plane on
// Kubernetes, as its ServiceAccount: node discovery, the Lease and an
// Event; and no more: it may not read Secrets, delete pods, patch nodes,
// or take a Lease of another name or namespace.
func TestPlaneRBACIsEnoughAndNoMore(t *testing.T) {
	kc, admin := cluster(t)
	applyPlaneRBAC(t, admin)
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:escape-system:escape-plane"}
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	createNode(t, admin, "node-r", "198.18.0.31", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	p := newPlane(t, plane.WithFollower())
	d, err := kube.NewDiscovery(sa, p.SetHosts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatalf("discovery as the plane's ServiceAccount: %v", err)
	}
	if h := p.Hosts(); len(h) != 1 || h[0].Name != "node-r" {
		t.Fatalf("hosts %+v", h)
	}
	e, err := kube.NewElection(sa, "escape-system", "escape-plane", "plane-0", kube.WithTimings(testLease, testRenew, testRetry))
	if err != nil {
		t.Fatal(err)
	}
	ectx, ecancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(ectx, p) }()
	defer func() { ecancel(); <-done }()
	eventually(t, 2*testLease, "the plane's ServiceAccount takes the Lease", func() bool { ok, _ := p.Leader(); return ok })

	pod, err := admin.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "escape.local/db:1"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ev := kube.NewEvent(plane.AuditEvent{Kind: "decision", Decision: "migrate", Container: "db-0-db", Time: time.Now()},
		podRef(pod), "DecidedMigrate", true, "plane-0")
	if _, err := sa.EventsV1().Events("default").Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Errorf("an Event on a pod as the plane's ServiceAccount: %v", err)
	}

	for _, ra := range []authorizationv1.ResourceAttributes{
		{Verb: "get", Resource: "secrets", Namespace: "escape-system"},
		{Verb: "list", Resource: "pods"},
		{Verb: "delete", Resource: "pods", Namespace: "default"},
		{Verb: "patch", Resource: "nodes"},
		{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: "escape-system", Name: "other"},
		{Verb: "create", Group: "coordination.k8s.io", Resource: "leases", Namespace: "default"},
		{Verb: "delete", Group: "events.k8s.io", Resource: "events", Namespace: "default"},
	} {
		r, err := sa.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("access review %+v: %v", ra, err)
		}
		if r.Status.Allowed {
			t.Errorf("the plane's ServiceAccount may %s %s %s/%s: more than it needs", ra.Verb, ra.Resource, ra.Namespace, ra.Name)
		}
	}
}
