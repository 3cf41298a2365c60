package events

import (
	"context"
	"time"
)

// SchemaVersion is bumped on any incompatible change of Event.
const SchemaVersion = 1

// IdentityLabel is the container label that names its identity: the key of
// its learned profile, kept across restore and migration. The control plane
// sets it to the container's id. The sensor honours it only on containers
// in its agent's own containerd namespace.
const IdentityLabel = "escape.identity"

// Types of events.
const (
	TypeAnomaly   = "anomaly"   // an epoch's mismatches exceeded the threshold
	TypeEpoch     = "epoch"     // epoch summary (optional, --epoch-events)
	TypeWatched   = "watched"   // a container's cgroup is now watched
	TypeUnwatched = "unwatched" // it is no longer watched (exit, delete, checkpoint)
	TypeDrops     = "drops"     // the kernel lost data: the epoch is degraded
	TypeError     = "error"     // the sensor could not watch a container, or similar
)

// Severities.
const (
	SevInfo     = "info"
	SevWarning  = "warning"
	SevCritical = "critical"
)

// Event is one line of the sensor's output.
type Event struct {
	Schema    int        `json:"schema"`
	Time      time.Time  `json:"time"`
	Type      string     `json:"type"`
	Severity  string     `json:"severity"`
	Sensor    string     `json:"sensor"` // host name of the sensor
	Container *Container `json:"container,omitempty"`
	Epoch     *Epoch     `json:"epoch,omitempty"`
	Drops     *Drops     `json:"drops,omitempty"`
	// Intervention marks a scored epoch (anomaly, epoch, drops) that
	// overlaps ESCAPE's own checkpoint, restore or restart of the
	// container: CRIU's code ran inside it, or the process had just been
	// restored. Absent otherwise. Added compatibly to schema 1: readers
	// that do not know it see the event as before, with a lowered severity.
	Intervention *Intervention `json:"intervention,omitempty"`
	Message      string        `json:"message,omitempty"`
}

// Intervention says which of ESCAPE's own steps an epoch overlaps.
type Intervention struct {
	Kind string `json:"kind"` // checkpoint, restore or restart
	By   string `json:"by"`   // who acted: agent (this host's node agent)
}

// Container identifies the container an event is about.
type Container struct {
	Identity  string            `json:"identity"` // stable across restore and migration; profile key
	ID        string            `json:"id"`
	Namespace string            `json:"namespace"`
	Host      string            `json:"host"`
	Image     string            `json:"image,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	CgroupID  uint64            `json:"cgroup_id"`
	// Pod is the Kubernetes pod of a container the kubelet made (read
	// from the CRI metadata containerd keeps); absent otherwise. Added
	// compatibly to schema 1.
	Pod *Pod `json:"pod,omitempty"`
}

// Pod is a container's Kubernetes pod.
type Pod struct {
	Namespace string `json:"namespace"` // the pod's Kubernetes namespace
	Name      string `json:"name"`
	UID       string `json:"uid"`
	Container string `json:"container"` // the container's name in the pod spec
	// Owner is the workload the sensor derived from the pod's name and
	// labels, "<kind>/<name>" (deployment/web, statefulset/db, pod/x):
	// the identity's middle part. docs/sensor.md states the rule.
	Owner string `json:"owner,omitempty"`
}

// Epoch summarises one epoch's verdict.
type Epoch struct {
	Seq uint32 `json:"seq"`
	// Start is when the sensor began this epoch: its watch of the cgroup
	// or the end of the container's previous epoch. With the event's
	// time it bounds the calls the epoch covers.
	Start      time.Time `json:"start,omitzero"`
	Calls      uint32    `json:"calls"`
	Windows    uint64    `json:"windows"`
	Bags       int       `json:"bags"` // distinct bags in the epoch
	Mode       string    `json:"mode"` // learning or detecting
	Mismatches uint64    `json:"mismatches"`
	NewBags    int       `json:"new_bags"`
	Threshold  uint64    `json:"threshold"` // the papers' T (mismatches); the scorer's own is Limit
	Score      float64   `json:"score"`     // share of windows with an unseen bag
	// Scorer is the rule that judged the epoch ("bosc", the papers', or
	// "lm"); Value is its score and Limit its threshold, both in the rule's
	// unit (mismatching windows for bosc, mean nats for lm): the epoch is
	// anomalous when Value > Limit. Limit is the identity's calibrated
	// threshold unless the operator set one (Calibrated false).
	Scorer     string  `json:"scorer,omitempty"`
	Value      float64 `json:"value"`
	Limit      float64 `json:"limit"`
	Calibrated bool    `json:"calibrated,omitempty"`
	Database   int     `json:"database"` // profile size after the epoch
	Degraded   bool    `json:"degraded"`
	Flushed    bool    `json:"flushed,omitempty"`
	Final      bool    `json:"final,omitempty"`
	// Unseen is the evidence of an anomalous epoch: the system calls of its
	// windows that the profile lacks, novel calls first.
	Unseen []Syscall `json:"unseen,omitempty"`
}

// Syscall is one system call of an anomalous epoch's unseen windows.
type Syscall struct {
	Name    string `json:"name"` // "unknown" outside the table the sensor reads, "nr_N" if its architecture lacks N
	Nr      uint16 `json:"nr"`
	Windows uint64 `json:"windows"`         // unseen windows that hold it
	Novel   bool   `json:"novel,omitempty"` // no learned bag holds it
}

// Drops describes lost data.
type Drops struct {
	Records    uint32 `json:"records"`     // ring-buffer outputs that failed since the last epoch
	LostEpochs uint32 `json:"lost_epochs"` // epochs that never reached userspace
	Unresolved int    `json:"unresolved"`  // windows whose bag was never learned
	Collisions int    `json:"collisions"`  // windows whose hash names two bags
	Total      uint64 `json:"total"`       // cumulative drops of the container
}

// Sink receives events. Emit must not block for long: slow targets queue.
type Sink interface {
	Emit(ctx context.Context, e Event) error
	Close() error
}
