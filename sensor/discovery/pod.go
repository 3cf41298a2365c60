package discovery

import (
	"context"

	containerd "github.com/containerd/containerd/v2/client"
	"go.uber.org/zap"

	"github.com/escape-mtd/escape/sensor"
)

// What containerd's CRI plugin keeps on a kubelet's container: the
// kubelet's labels (k8s.io/kubelet/types/labels.go), its own kind label
// (internal/cri/labels), and the sandbox id annotation on the OCI spec
// (internal/cri/annotations). A pod's own labels are on its sandbox.
const (
	labelPodNamespace = "io.kubernetes.pod.namespace"
	labelPodName      = "io.kubernetes.pod.name"
	labelPodUID       = "io.kubernetes.pod.uid"
	labelContainer    = "io.kubernetes.container.name"
	criKindLabel      = "io.cri-containerd.kind"
	criKindSandbox    = "sandbox"
	annotationSandbox = "io.kubernetes.cri.sandbox-id"
)

// podOf reads a CRI container's pod, or nil if it has none of the
// kubelet's labels. Its owner is derived from the pod's labels, on the
// sandbox container; a sandbox that cannot be read leaves the pod its own
// workload.
func (w *Watcher) podOf(ctx context.Context, cli *containerd.Client, id string, labels, annotations map[string]string) *sensor.Pod {
	p := &sensor.Pod{Namespace: labels[labelPodNamespace], Name: labels[labelPodName], UID: labels[labelPodUID],
		Container: labels[labelContainer]}
	if p.Namespace == "" || p.Name == "" || p.Container == "" {
		return nil
	}
	var podLabels map[string]string
	if sb := annotations[annotationSandbox]; sb != "" {
		sandbox, err := cli.LoadContainer(ctx, sb)
		if err == nil {
			podLabels, err = sandbox.Labels(ctx)
		}
		if err != nil {
			w.log.Warn("cannot read the pod's sandbox: the pod is its own workload", zap.String("id", id),
				zap.String("sandbox", sb), zap.Error(err))
			podLabels = nil
		}
	}
	p.Owner = sensor.Workload(p.Name, podLabels)
	return p
}
