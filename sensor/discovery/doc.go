// Package discovery keeps the sensor's watched set in step with containerd:
// a scan of running tasks at start-up, then task events (create, start,
// exit, delete, checkpointed), for one containerd namespace of one daemon
// per Watcher (the agent's own, nerdctl's default, the CRI plugin's
// k8s.io). It maps each task to its cgroup2 directory and id, under either
// cgroup driver or from the task's pid, with its namespace, image and
// labels; in the CRI namespace also its Kubernetes pod (the kubelet's
// labels and the pod's own, on its sandbox), skipping the sandboxes
// themselves. Only in the agent's own namespace is a container's identity
// label honoured (Endpoint.Own).
package discovery
