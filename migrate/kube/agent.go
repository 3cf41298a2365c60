package kube

import (
	"context"
	"fmt"
	"time"

	"github.com/escape-mtd/escape/migrate"
)

// Agent is the node agent's side of the pod actions (migrate.PodHost):
// checkpoint through the kubelet into the store, replace from the store.
type Agent struct {
	kubelet  *Kubelet
	store    *Store
	replacer *Replacer
	timeout  time.Duration
}

var _ migrate.PodHost = (*Agent)(nil)

// NewAgent acts with the node's kubelet, its store of safe checkpoints and
// its replacer; a checkpoint may take up to timeout (the kubelet's CRI
// default when 0).
func NewAgent(k *Kubelet, s *Store, r *Replacer, timeout time.Duration) *Agent {
	return &Agent{kubelet: k, store: s, replacer: r, timeout: timeout}
}

func podContainer(p migrate.Pod) (PodContainer, error) {
	pc := PodContainer{Namespace: p.Namespace, Pod: p.Name, Container: p.Container}
	return pc, pc.check()
}

// CheckpointPod checkpoints the pod's container and keeps the archive as
// its newest safe checkpoint.
func (a *Agent) CheckpointPod(ctx context.Context, p migrate.Pod) (migrate.PodCheckpoint, error) {
	pc, err := podContainer(p)
	if err != nil {
		return migrate.PodCheckpoint{}, err
	}
	archive, err := a.kubelet.Checkpoint(ctx, pc.Namespace, pc.Pod, pc.Container, a.timeout)
	if err != nil {
		return migrate.PodCheckpoint{}, err
	}
	kept, err := a.store.Keep(pc, archive)
	if err != nil {
		return migrate.PodCheckpoint{}, err
	}
	info, err := readArchiveInfo(kept)
	if err != nil {
		return migrate.PodCheckpoint{}, fmt.Errorf("kept checkpoint of %s: %w", pc, err)
	}
	return migrate.PodCheckpoint{Archive: kept, Bytes: info.Bytes, CheckpointedAt: info.CheckpointedAt}, nil
}

// ReplacePod replaces the pod with one restored from its newest safe
// checkpoint (Replacer.Replace).
func (a *Agent) ReplacePod(ctx context.Context, p migrate.Pod) (string, error) {
	pc, err := podContainer(p)
	if err != nil {
		return "", err
	}
	return a.replacer.Replace(ctx, pc)
}
