// Package plane is ESCAPE's control plane: it turns anomaly reports into
// actions under a per-container policy — safe checkpoints while a container
// is clean, rollback on an anomaly, and escalation to live migration once
// rollbacks stop helping.
package plane
