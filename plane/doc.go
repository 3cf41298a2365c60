// Package plane is ESCAPE's control plane: it turns anomaly reports into
// actions under a per-container policy — safe checkpoints while a container
// is clean, rollback on an anomaly, and escalation to live migration once
// rollbacks stop helping.
//
// Its hosts are an inventory that may change while it runs (SetHosts: the
// configuration's hosts, or plane/kube's nodes), and it acts only while it
// leads (Lead, Follow: plane/kube's Lease; a plane alone always leads).
package plane
