package sensor

import (
	"strings"

	"github.com/escape-mtd/escape/sensor/events"
)

// IdentityLabel overrides a container's identity: set it on a migrated or
// renamed container so that it keeps its profile.
const IdentityLabel = events.IdentityLabel

// Container is what discovery knows of a watched container.
type Container struct {
	ID, Namespace, Host, Image string
	Labels                     map[string]string
	CgroupID                   uint64
	CgroupPath                 string // cgroup2 directory
}

// Identity is the profile key: the IdentityLabel if set, else
// namespace/id. A restore gives the same container a new cgroup (new id)
// but the same identity, so it keeps its learned profile.
func (c Container) Identity() string {
	if v := strings.TrimSpace(c.Labels[IdentityLabel]); v != "" {
		return v
	}
	return c.Namespace + "/" + c.ID
}
