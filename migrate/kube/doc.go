// Package kube acts on a compromised Kubernetes pod without fighting the
// kubelet: it runs on the pod's node (in the node agent) and goes through
// the kubelet and the API server for every step, never behind their back.
//
//   - Checkpoint asks the kubelet's checkpoint API
//     (POST /checkpoint/{namespace}/{pod}/{container}, authorised by the
//     nodes/checkpoint subresource) for a checkpoint archive, which the
//     kubelet has the CRI (containerd) write under its root directory.
//   - A Store keeps the newest archives taken while the pod was judged
//     safe, per pod container, bounded in count and bytes; every archive is
//     checked (ParseArchive) before it is kept, and moved in atomically.
//   - ImportCheckpointImage turns an archive into a checkpoint OCI image in
//     containerd's k8s.io namespace: an index annotated with
//     org.criu.checkpoint.container.name, which containerd's CRI (since
//     PR 10365, in 2.1) restores at CreateContainer instead of starting.
//     That restore pulls the container's base image by reference, without
//     pull secrets or the CRI's registry settings; the image points that
//     reference at a read-only registry on the node's loopback over the
//     node's own content (mirror.go), so the restore needs no registry.
//   - Replace creates, through the API server, a bare replacement pod from
//     the old pod's spec with the checkpointed container's image set to the
//     checkpoint image, pinned to this node (the image exists only here),
//     waits until it runs, and only then deletes the compromised pod through
//     the API server. Pods owned by a controller are refused (docs/kubernetes.md
//     says why).
//   - Agent ties the three together for the node agent (migrate.PodHost),
//     which the plane reaches over plane/agentapi.
//
// docs/kubernetes.md weighs this path against pod-level checkpointing
// (KEP-5823) and a RuntimeClass shim (zeropod), and states its limits.
package kube
