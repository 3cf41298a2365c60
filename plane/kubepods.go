package plane

import (
	"sync"

	"github.com/escape-mtd/escape/sensor/events"
)

// Which Kubernetes pod a protected container belongs to, for the Events
// plane/kube records on it: from the labels the kubelet (CRI) puts on
// its containers, kept in the spec of an adopted container, else from
// what the sensor last reported (events.Container.Pod).

// The CRI's labels on a kubelet's container (sensor/discovery reads the
// same).
const (
	labelPodNamespace = "io.kubernetes.pod.namespace"
	labelPodName      = "io.kubernetes.pod.name"
	labelPodUID       = "io.kubernetes.pod.uid"
)

// maxPods bounds the pods learned from sensor events.
const maxPods = 4096

// podCache is what sensor events said of each container's pod.
type podCache struct {
	mu sync.Mutex
	m  map[string]events.Pod
}

func (c *podCache) note(id string, pod *events.Pod) {
	if pod == nil || pod.Name == "" || pod.Namespace == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]events.Pod{}
	}
	if _, ok := c.m[id]; !ok && len(c.m) >= maxPods {
		return // bounded: an unknown container past the bound stays unknown
	}
	c.m[id] = *pod
}

func (c *podCache) get(id string) (events.Pod, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.m[id]
	return p, ok
}

// PodOf is the Kubernetes pod of a protected container, if it is one.
func (p *Plane) PodOf(id string) (events.Pod, bool) {
	if rec, err := p.store.Container(id); err == nil {
		l := rec.Spec.Labels
		if l[labelPodNamespace] != "" && l[labelPodName] != "" {
			return events.Pod{Namespace: l[labelPodNamespace], Name: l[labelPodName], UID: l[labelPodUID]}, true
		}
	}
	return p.pods.get(id)
}

// WithEventSink passes every audit event, once logged, to sink (plane/kube
// makes Kubernetes Events of the decisions). sink must not block: it runs
// on the path of the action.
func WithEventSink(sink func(AuditEvent)) Option { return func(p *Plane) { p.sink = sink } }
