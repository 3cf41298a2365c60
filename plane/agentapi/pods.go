package agentapi

// Kubernetes pods of the agent's node (migrate.PodHost, migrate/kube): the
// agent acts only through the kubelet and the API server.

import (
	"context"
	"fmt"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi/agentpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// WithPods has the server act on its node's pods (an agent on a Kubernetes
// node); without it the pod calls answer Unimplemented.
func WithPods(p migrate.PodHost) ServerOption { return func(s *Server) { s.pods = p } }

// maxPodName bounds each name of a PodRef (a DNS subdomain is 253).
const maxPodName = 253

func podFromPB(r *agentpb.PodRef) (migrate.Pod, error) {
	p := migrate.Pod{Namespace: r.GetNamespace(), Name: r.GetPod(), Container: r.GetContainer()}
	for _, s := range []string{p.Namespace, p.Name, p.Container} {
		if s == "" || len(s) > maxPodName {
			return p, invalid("pod %.80s/%.80s/%.80s: every name is 1 to %d characters", p.Namespace, p.Name, p.Container, maxPodName)
		}
	}
	return p, nil
}

func (s *Server) CheckpointPod(ctx context.Context, r *agentpb.PodRef) (*agentpb.PodCheckpointReply, error) {
	if s.pods == nil {
		return nil, status.Error(codes.Unimplemented, "checkpoint pod: this agent acts on no kubernetes node")
	}
	p, err := podFromPB(r)
	if err != nil {
		return nil, toStatus(err)
	}
	ck, err := s.pods.CheckpointPod(ctx, p)
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentpb.PodCheckpointReply{Archive: ck.Archive, Bytes: ck.Bytes, CheckpointedAt: ck.CheckpointedAt.UTC().Format(time.RFC3339Nano)}, nil
}

func (s *Server) ReplacePod(ctx context.Context, r *agentpb.PodRef) (*agentpb.PodReplaceReply, error) {
	if s.pods == nil {
		return nil, status.Error(codes.Unimplemented, "replace pod: this agent acts on no kubernetes node")
	}
	p, err := podFromPB(r)
	if err != nil {
		return nil, toStatus(err)
	}
	name, err := s.pods.ReplacePod(ctx, p)
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentpb.PodReplaceReply{Replacement: name}, nil
}

var _ migrate.PodHost = (*Client)(nil)

func podToPB(p migrate.Pod) *agentpb.PodRef {
	return &agentpb.PodRef{Namespace: p.Namespace, Pod: p.Name, Container: p.Container}
}

// CheckpointPod asks the agent to checkpoint the pod's container through
// its kubelet and keep the archive as its newest safe checkpoint.
func (c *Client) CheckpointPod(ctx context.Context, p migrate.Pod) (migrate.PodCheckpoint, error) {
	r, err := c.api.CheckpointPod(ctx, podToPB(p))
	if err != nil {
		return migrate.PodCheckpoint{}, c.err(fmt.Sprintf("checkpoint pod %s/%s/%s", p.Namespace, p.Name, p.Container), err)
	}
	at, err := time.Parse(time.RFC3339Nano, r.GetCheckpointedAt())
	if err != nil {
		return migrate.PodCheckpoint{}, fmt.Errorf("checkpoint pod %s/%s on %s: checkpointed_at %q: %w", p.Namespace, p.Name, c.name, r.GetCheckpointedAt(), err)
	}
	return migrate.PodCheckpoint{Archive: r.GetArchive(), Bytes: r.GetBytes(), CheckpointedAt: at}, nil
}

// ReplacePod asks the agent to replace the pod with one restored from its
// newest safe checkpoint, and returns the replacement's name.
func (c *Client) ReplacePod(ctx context.Context, p migrate.Pod) (string, error) {
	r, err := c.api.ReplacePod(ctx, podToPB(p))
	if err != nil {
		return "", c.err(fmt.Sprintf("replace pod %s/%s/%s", p.Namespace, p.Name, p.Container), err)
	}
	return r.GetReplacement(), nil
}
