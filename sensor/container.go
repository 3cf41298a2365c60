package sensor

import (
	"strings"

	"github.com/escape-mtd/escape/sensor/events"
)

// IdentityLabel overrides a container's identity: set it on a migrated or
// renamed container so that it keeps its profile. It is honoured only on a
// container in the agent's own containerd namespace (Container.Own).
const IdentityLabel = events.IdentityLabel

// Container is what discovery knows of a watched container.
type Container struct {
	ID, Namespace, Host, Image string
	Labels                     map[string]string
	CgroupID                   uint64
	CgroupPath                 string // cgroup2 directory
	// Own says the container is in the agent's own containerd namespace,
	// where only the agent creates containers: its IdentityLabel is the
	// agent's (the plane's) and is honoured. Anywhere else anyone who may
	// run a container could set the label to another container's identity
	// and train or poison that one's profile, so it is ignored there.
	Own bool
	// Pod is the Kubernetes pod the container belongs to, read from the
	// CRI metadata containerd keeps in its CRI namespace; nil otherwise.
	Pod *Pod
}

// Pod is a pod container's Kubernetes metadata: what the kubelet gave
// containerd's CRI plugin, and the workload derived from the pod's labels.
type Pod struct {
	Namespace, Name, UID, Container string
	// Owner is the workload that made the pod, "<kind>/<name>" (see
	// Workload): replicas share it.
	Owner string
}

// Identity is the profile key:
//   - the IdentityLabel of a container the agent owns (Own), if set;
//   - for a pod's container, its workload: "k8s/<namespace>/<owner
//     kind>/<owner name>/<container name>", so replicas share a profile;
//   - else <containerd namespace>/<id>.
//
// A restore gives the same container a new cgroup (new id) but the same
// identity, so it keeps its learned profile.
func (c Container) Identity() string {
	if c.Own {
		if v := strings.TrimSpace(c.Labels[IdentityLabel]); v != "" {
			return v
		}
	}
	if p := c.Pod; p != nil && p.Namespace != "" && p.Owner != "" && p.Container != "" {
		return "k8s/" + p.Namespace + "/" + p.Owner + "/" + p.Container
	}
	return c.Namespace + "/" + c.ID
}

// IgnoredIdentity returns the IdentityLabel of a container that may not
// claim an identity (not Own), and whether it has one: a poisoning
// attempt, or a misplaced label, to log and count.
func (c Container) IgnoredIdentity() (string, bool) {
	v := strings.TrimSpace(c.Labels[IdentityLabel])
	return v, v != "" && !c.Own
}

// event is the container as events describe it.
func (c Container) event() *events.Container {
	e := &events.Container{Identity: c.Identity(), ID: c.ID, Namespace: c.Namespace, Host: c.Host,
		Image: c.Image, Labels: c.Labels, CgroupID: c.CgroupID}
	if p := c.Pod; p != nil {
		e.Pod = &events.Pod{Namespace: p.Namespace, Name: p.Name, UID: p.UID, Container: p.Container, Owner: p.Owner}
	}
	return e
}
