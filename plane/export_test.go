package plane

import "context"

// What the lab tests (package plane_test: they import tools/lab, which
// imports plane) need of the plane's insides.

// CheckpointDue takes the periodic checkpoints that are due now.
func (p *Plane) CheckpointDue(ctx context.Context) { p.checkpointDue(ctx) }

// AuditPath is the plane's audit log.
func (p *Plane) AuditPath() string { return p.cfg.Audit }

// ConfigForTest is the configuration the plane runs with.
func (p *Plane) ConfigForTest() Config { return p.cfg }
