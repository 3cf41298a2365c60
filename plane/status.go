package plane

import (
	"context"
	"time"

	"github.com/escape-mtd/escape/migrate"
)

// ContainerStatus is one protected container as status reports it.
type ContainerStatus struct {
	ID             string            `json:"id"`
	Host           string            `json:"host"`
	IP             string            `json:"ip"`
	State          string            `json:"state"`
	Policy         Policy            `json:"policy"`
	Checkpoints    int               `json:"checkpoints"`
	LastCheckpoint *CheckpointRecord `json:"last_checkpoint,omitempty"`
	Epoch          EpochRecord       `json:"epoch"`
	Rollbacks      int               `json:"rollbacks_in_window"`
	// RollingBack is set while a rollback runs, or after a plane stopped
	// in the middle of one (the next start redoes it).
	RollingBack *PendingRollback `json:"rollback_in_progress,omitempty"`
}

// HostStatus is one host as status reports it.
type HostStatus struct {
	HostRecord
	Labels    map[string]string `json:"labels"`
	Reachable bool              `json:"reachable"`
	Error     string            `json:"error,omitempty"`
}

// Status is the plane's state.
type Status struct {
	Containers []ContainerStatus `json:"containers"`
	Hosts      []HostStatus      `json:"hosts"`
	Migrations []migrate.Record  `json:"migrations"`
}

// Status reports containers, hosts and unsettled migrations.
func (p *Plane) Status(ctx context.Context) (Status, error) {
	var st Status
	cs, err := p.store.Containers()
	if err != nil {
		return st, err
	}
	for _, c := range cs {
		cst := ContainerStatus{ID: c.Spec.ID, Host: c.Host, IP: c.Spec.IP.String(), Policy: c.Policy, RollingBack: c.Rollback}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if s, err := p.rt.State(sctx, c.Host, c.Spec.ID); err != nil {
			cst.State = "unknown: " + err.Error()
		} else {
			cst.State = string(s)
		}
		cancel()
		if cks, err := p.store.Checkpoints(c.Spec.ID); err == nil {
			cst.Checkpoints = len(cks)
			if len(cks) > 0 {
				last := cks[len(cks)-1]
				cst.LastCheckpoint = &last
			}
		}
		cst.Epoch, _ = p.store.Epoch(c.Spec.ID)
		cst.Rollbacks, _ = p.store.Rollbacks(c.Spec.ID, p.now().Add(-c.Policy.RollbackWindow))
		st.Containers = append(st.Containers, cst)
	}
	for _, h := range p.env.Hosts {
		hr, err := p.store.Host(h.Name)
		if err != nil {
			return st, err
		}
		hs := HostStatus{HostRecord: hr, Labels: h.Labels}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if err := p.rt.Ping(sctx, h.Name); err != nil {
			hs.Error = err.Error()
		} else {
			hs.Reachable = true
		}
		cancel()
		st.Hosts = append(st.Hosts, hs)
	}
	st.Migrations, err = p.store.Migrations(ctx)
	return st, err
}
