package discovery

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/namespaces"
)

func containerdNS(ctx context.Context, ns string) context.Context {
	return namespaces.WithNamespace(ctx, ns)
}
