// Package discovery keeps the sensor's watched set in step with containerd:
// a scan of running tasks at start-up, then task events (create, start,
// exit, delete, checkpointed), on one or more containerd daemons (one per lab
// host). It maps each task to its cgroup2 directory and id, namespace, image
// and labels.
package discovery
