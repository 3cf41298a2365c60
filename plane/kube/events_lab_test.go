package kube_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"go.uber.org/zap/zaptest"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/plane/kube"
)

// A decision of the plane on a pod's container (an anomaly answered by a
// rollback) appears as an Event on that pod object, naming the plane as
// its reporting controller.
func TestDecisionBecomesAnEventOnThePod(t *testing.T) {
	_, cs := cluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pod, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "escape.local/web:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod: %v", err)
	}
	rec := kube.NewRecorder(cs, "plane-0", kube.WithRecorderLogger(zaptest.NewLogger(t)))
	p := newPlane(t, plane.WithEventSink(rec.Sink))
	rec.Attach(p.PodOf)
	go rec.Run(ctx)
	if err := p.SetHosts([]plane.HostConfig{{Name: "node-1", Agent: "127.0.0.1:1"}}); err != nil {
		t.Fatal(err)
	}
	// The container as adoption records a kubelet's: the CRI's labels name
	// its pod.
	id := "web-0-web"
	if err := p.Store().PutContainer(plane.ContainerRecord{Host: "node-1", Policy: plane.DefaultPolicy(), Created: time.Now(), Updated: time.Now(),
		Spec: migrate.Spec{ID: id, Image: "escape.local/web:1", Labels: map[string]string{
			"io.kubernetes.pod.namespace": "default", "io.kubernetes.pod.name": "web-0", "io.kubernetes.pod.uid": string(pod.UID)}}}); err != nil {
		t.Fatal(err)
	}
	d, err := p.HandleReport(ctx, plane.Report{Container: id, Epoch: 1, Anomalous: true, Mismatches: 9, Threshold: 3, Time: time.Now()}, "test")
	t.Logf("decision: %+v (%v)", d, err)
	if d.Action != "rollback" {
		t.Fatalf("decision %q, want rollback", d.Action)
	}
	sel := fields.OneTermEqualSelector("regarding.name", "web-0").String()
	var got []string
	eventually(t, 30*time.Second, "an Event on pod web-0", func() bool {
		evs, err := cs.EventsV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			t.Fatalf("list events: %v", err)
		}
		got = got[:0]
		for _, e := range evs.Items {
			got = append(got, e.Reason)
			if e.Reason == "DecidedRollback" && e.ReportingController == kube.ReportingController &&
				e.Regarding.UID == pod.UID && e.Type == corev1.EventTypeWarning && strings.Contains(e.Note, id) {
				return true
			}
		}
		return false
	})
	// Through the core API too (what kubectl describe pod shows).
	core, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=web-0"})
	if err != nil || len(core.Items) == 0 {
		t.Errorf("core events of web-0: %d, %v", len(core.Items), err)
	}
	if rec.Posted() == 0 {
		t.Errorf("the recorder counts no Event posted (%d dropped)", rec.Dropped())
	}
}
