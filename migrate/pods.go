package migrate

import (
	"context"
	"errors"
	"time"
)

// Kubernetes pods are the kubelet's, not the agent's: a host acts on them
// only through the kubelet and the API server (migrate/kube, on the node;
// docs/kubernetes.md). PodHost is what the plane asks of such a host.

// Pod names one container of one Kubernetes pod.
type Pod struct{ Namespace, Name, Container string }

// PodCheckpoint is a checkpoint archive the agent keeps as a pod
// container's newest safe one.
type PodCheckpoint struct {
	Archive        string    `json:"archive"`
	Bytes          int64     `json:"bytes"`
	CheckpointedAt time.Time `json:"checkpointed_at"`
}

// PodHost is a host whose agent acts on its node's pods.
type PodHost interface {
	// CheckpointPod checkpoints the pod's container through the kubelet and
	// keeps the archive as its newest safe checkpoint.
	CheckpointPod(ctx context.Context, p Pod) (PodCheckpoint, error)
	// ReplacePod replaces the pod, through the API server, with one restored
	// from the container's newest safe checkpoint, and returns its name.
	ReplacePod(ctx context.Context, p Pod) (string, error)
}

// The refusals of a PodHost, whichever side of the link they come from.
var (
	// ErrPodOwned: the pod has a controller, which would fight a replacement.
	ErrPodOwned = errors.New("pod has a controller")
	// ErrPodNotFound: no such pod or container, or no safe checkpoint of it.
	ErrPodNotFound = errors.New("pod, container or checkpoint not found")
	// ErrPodForbidden: the kubelet or the API server refused the agent.
	ErrPodForbidden = errors.New("not authorised by kubernetes")
	// ErrBadCheckpoint: an archive is not a restorable checkpoint.
	ErrBadCheckpoint = errors.New("not a restorable checkpoint archive")
)
