// Package kube is the plane on Kubernetes, through client-go: the
// cluster's Node objects are the plane's inventory of hosts (Discovery,
// an informer: nodes that join, change or leave update it without a
// restart), a coordination.k8s.io Lease elects the one replica that acts
// (Elect), and the plane's decisions on a pod's container become Events
// on that pod (Recorder, rate-limited, dropping what exceeds its budget).
// The plane itself knows none of this: it sees an inventory
// (plane.SetHosts), a leadership (plane.Lead, plane.Follow) and an audit
// sink (plane.WithEventSink).
package kube
