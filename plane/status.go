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
	// Generation is the address lease's generation, Lease the lease as
	// the host's kernel holds it.
	Generation uint64              `json:"generation"`
	Lease      *migrate.LeaseState `json:"lease,omitempty"`
}

// HostStatus is one host as status reports it.
type HostStatus struct {
	HostRecord
	Labels    map[string]string `json:"labels"`
	Agent     string            `json:"agent"`
	Reachable bool              `json:"reachable"`
	Version   string            `json:"version,omitempty"`
	// SharedStorage is the id of the storage the host shares with others
	// ("" for none).
	SharedStorage string `json:"shared_storage,omitempty"`
	Error         string `json:"error,omitempty"`
}

// Status is the plane's state.
type Status struct {
	Containers []ContainerStatus `json:"containers"`
	Hosts      []HostStatus      `json:"hosts"`
	Migrations []migrate.Record  `json:"migrations"`
	// Leading says whether this replica acts; Leader names the one that
	// does (empty for a plane alone, or not known yet).
	Leading bool   `json:"leading"`
	Leader  string `json:"leader,omitempty"`
}

// Status reports containers, hosts and unsettled migrations.
func (p *Plane) Status(ctx context.Context) (Status, error) {
	var st Status
	st.Leading, st.Leader = p.Leader()
	cs, err := p.store.Containers()
	if err != nil {
		return st, err
	}
	for _, c := range cs {
		cst := ContainerStatus{ID: c.Spec.ID, Host: c.Host, IP: c.Spec.IP.String(), Policy: c.Policy, RollingBack: c.Rollback, Generation: c.Generation}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if h, err := p.Host(c.Host); err != nil {
			cst.State = "unknown: " + err.Error()
		} else if s, err := h.Status(sctx, c.Spec.ID); err != nil {
			cst.State = "unknown: " + err.Error()
		} else {
			cst.State = string(s.Status)
			cst.Lease = &s.Lease
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
	for _, h := range p.hosts.configs() {
		hr, err := p.store.Host(h.Name)
		if err != nil {
			return st, err
		}
		hs := HostStatus{HostRecord: hr, Labels: h.Labels, Agent: h.Agent}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if info, err := p.hostInfo(sctx, h.Name); err != nil {
			hs.Error = err.Error()
		} else {
			hs.Reachable, hs.Version, hs.SharedStorage = true, info.Version, info.SharedStorage
		}
		cancel()
		st.Hosts = append(st.Hosts, hs)
	}
	st.Migrations, err = p.store.Migrations(ctx)
	return st, err
}
