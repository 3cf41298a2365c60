package migrate

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"time"
)

// Host is one machine as the plane reaches it: its node agent, over the
// network. Every host-local step of a checkpoint, a rollback, a restart, a
// replication or a migration is one call. Each call is idempotent (doing it
// twice leaves the host as doing it once) and says what it did, so that a
// plane that crashed, or whose answer was lost, can redo or undo it.
//
// Every request carries the deadline of its call's context, and a host
// refuses one that arrives after it (ErrRequestExpired): an unanswered
// call lands by its deadline (plus the clock skew) or never, which the
// Migrator waits out before acting as if it never happened (fence.go).
//
// The plane never touches a host's files, sockets or namespaces itself:
// images are named (ImageName), never given as paths, and addresses move
// by ReleaseAddress on one host and ClaimAddress on another.
type Host interface {
	// Name is the host's name, as its certificate names it.
	Name() string
	// Hello says who the agent is and what it can do.
	Hello(ctx context.Context) (HostInfo, error)
	Containers
	Images
	Network
	// Close drops the connection.
	Close() error
}

// Containers are the container steps of one host.
type Containers interface {
	// Status reports the container's task, and its address and network
	// locks when the namespace exists.
	Status(ctx context.Context, id string) (ContainerStatus, error)
	// Start creates the container from its image with its network (the
	// address only if opts.Address) and starts a fresh task. A running copy
	// is left as it is ("already running").
	Start(ctx context.Context, s Spec, opts StartOptions) (StepResult, error)
	// Restart kills the task, if any, and starts a fresh one from the
	// image, keeping the network (a stateless container's restart).
	Restart(ctx context.Context, s Spec) (StepResult, error)
	// Kill stops and deletes the task, keeping the container object and
	// its network.
	Kill(ctx context.Context, id string) (StepResult, error)
	// Remove deletes the task, the container object, its network and any
	// process left in its cgroup. Removing an absent container is not an
	// error ("absent").
	Remove(ctx context.Context, id string) (StepResult, error)
	// Checkpoint dumps the container into the named image, verifies it and
	// returns its size. With opts.Exit the container stops once dumped (a
	// migration); without, it keeps running (a safe checkpoint). An image
	// that already exists and verifies is not dumped again ("exists").
	Checkpoint(ctx context.Context, id string, image ImageName, opts CheckpointOptions) (CheckpointResult, error)
	// Restore starts the container from the named image, replacing its
	// task. The container's network must exist, with its address for
	// established connections to come back.
	Restore(ctx context.Context, s Spec, image ImageName, opts RestoreOptions) (RestoreResult, error)
	// Stage prepares a restore without running it: the network (no
	// address), the guards, the container object and a task that restores
	// from image when StartStaged starts it. The image need not exist yet.
	Stage(ctx context.Context, s Spec, image ImageName, opts StageOptions) (StepResult, error)
	// StartStaged starts what Stage prepared, lifts opts.Guards once the
	// copy runs, and returns when it runs (with a lazy restore, once every
	// page is in).
	StartStaged(ctx context.Context, s Spec, image ImageName, opts StartStagedOptions) (RestoreResult, error)
}

// Images are a host's checkpoint images and container images.
type Images interface {
	// VerifyImage checks that the named image holds a whole dump and
	// returns its size.
	VerifyImage(ctx context.Context, image ImageName) (int64, error)
	// DropImage deletes the named image and its work directories.
	DropImage(ctx context.Context, image ImageName) (StepResult, error)
	// EnsureImage makes sure the host's containerd has the container image
	// ref: present, pulled from its registry, or, with from set, imported
	// from that host's agent (from must have offered it).
	EnsureImage(ctx context.Context, ref string, from *Peer) (ImageResult, error)
	// Offer lets one named peer fetch what, once, within a while; the
	// ticket goes to that peer's Fetch or EnsureImage.
	Offer(ctx context.Context, what Offer) (Ticket, error)
	// Fetch copies the named checkpoint image from a peer that offered it
	// (compressed, checksummed, and in place only once whole).
	Fetch(ctx context.Context, image ImageName, from Peer) (TransferResult, error)
}

// Network are the address and guard steps of one host.
type Network interface {
	// PrepareNetwork creates the container's namespace and interface (its
	// MAC on the host's bridge), with the address only if withAddress.
	PrepareNetwork(ctx context.Context, s Spec, withAddress bool) (StepResult, error)
	// RemoveNetwork deletes the container's namespace and interface.
	RemoveNetwork(ctx context.Context, id string) (StepResult, error)
	// ReleaseAddress removes the address from the container's interface
	// and fences it (Lease revoked).
	ReleaseAddress(ctx context.Context, id string, ip netip.Prefix) (StepResult, error)
	// ClaimAddress grants the lease, then, unless another station answers
	// for the address on the segment within opts.LastLook, adds it to the
	// container's interface. On error the address is not there.
	ClaimAddress(ctx context.Context, id string, ip netip.Prefix, opts ClaimOptions) (StepResult, error)
	// Announce sends gratuitous ARP for the address from the container's
	// interface, in rounds that outlive the call.
	Announce(ctx context.Context, id string, ip netip.Addr, opts AnnounceOptions) (StepResult, error)
	// Probe asks, from the host's own interface, whether a station other
	// than ignoreMAC answers for ip within d.
	Probe(ctx context.Context, ip netip.Addr, ignoreMAC string, d time.Duration) (ProbeResult, error)
	// StartSentry probes and listens for ip until StopSentry, and for at
	// least min; the agent stops a forgotten sentry by itself after a
	// while.
	StartSentry(ctx context.Context, ip netip.Addr, ignoreMAC string, min time.Duration) (SentryID, error)
	StopSentry(ctx context.Context, id SentryID) (ProbeResult, error)
	// SetGuards adds (on) or removes the guards in the container's
	// namespace. Removing absent guards is not an error.
	SetGuards(ctx context.Context, id string, g Guards, on bool) (StepResult, error)
	// NetworkLocks lists, and with remove deletes, the CRIU network lock
	// tables left in the container's namespace.
	NetworkLocks(ctx context.Context, id string, remove bool) ([]string, error)
	// Lease sets the container's address lease: a kernel-enforced claim
	// that fences the address (no traffic, no ARP answers) the moment it
	// lapses, whether or not the agent is still alive. A lease with an
	// older generation than the host has seen is refused
	// (ErrStaleGeneration).
	Lease(ctx context.Context, id string, l Lease) (LeaseState, error)
}

// HostInfo is what an agent says of itself.
type HostInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// SharedStorage identifies the shared storage the host mounts ("" for
	// none): hosts that report the same id read each other's images
	// without a transfer.
	SharedStorage string `json:"shared_storage,omitempty"`
	// LazyRestore says the host can restore memory lazily (its agent
	// names its CRIU binary).
	LazyRestore bool `json:"lazy_restore"`
	// BootID changes when the host reboots.
	BootID string `json:"boot_id"`
}

// Status of a container's task on one host.
type Status string

const (
	Absent  Status = "absent"  // no container object
	Created Status = "created" // container object, no task (or a staged one)
	Running Status = "running"
	Paused  Status = "paused"
	Stopped Status = "stopped" // task exited (e.g. after a dump with exit)
)

// ContainerStatus is a container on one host.
type ContainerStatus struct {
	Status Status `json:"status"`
	// PID is the host PID of the task's init process (0 without a task).
	PID uint32 `json:"pid,omitempty"`
	// MemoryBytes is about what a dump would write as pages (0 unknown).
	MemoryBytes uint64 `json:"memory_bytes,omitempty"`
	// Network says the container's namespace exists; Addresses are the
	// addresses on its interface.
	Network   bool           `json:"network"`
	Addresses []netip.Prefix `json:"addresses,omitempty"`
	// NetworkLocks are CRIU lock tables found in the namespace.
	NetworkLocks []string `json:"network_locks,omitempty"`
	// Lease is the address lease in the namespace.
	Lease LeaseState `json:"lease"`
}

// StepResult says what a step did: "created", "already running",
// "absent", "removed"... (for the journal and the audit log).
type StepResult struct {
	Did string `json:"did"`
}

// StartOptions tune Start.
type StartOptions struct {
	// Address adds the spec's address (with Lease) to the new interface.
	Address bool
	Lease   Lease
}

// CheckpointOptions tune Checkpoint.
type CheckpointOptions struct {
	// Exit stops the container once dumped (a migration).
	Exit bool
	// Paused goes through containerd's client Task.Checkpoint, which
	// pauses the task first (for measurements; see planebench -modes).
	Paused bool
	// RootFS also writes the container's changes to its image's file
	// system into the dump, for a restore on another host.
	RootFS bool
}

// CheckpointResult reports a dump.
type CheckpointResult struct {
	Did   string        `json:"did"`
	Bytes int64         `json:"bytes"`
	Took  time.Duration `json:"took_ns"`
	CRIU  CRIUStats     `json:"criu"`
}

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// Lazy brings the memory in lazily and holds every packet off the copy
	// until the last page is in; on error no copy is left and the caller
	// restores again in full.
	Lazy bool
	// ClearLocks removes what earlier failed restores left blocking the
	// namespace (CRIU's lock tables, a lazy restore's hold): for a restore
	// that carries no live connection, such as a rollback.
	ClearLocks bool
	// TCPClose restores the dump's connections closed (a rollback: their
	// peers have moved on).
	TCPClose bool
	// Fresh requires that the host has no container object with the id
	// yet: a migration destination adopts no leftover.
	Fresh bool
}

// StageOptions tune Stage.
type StageOptions struct {
	// Guards are set in the staged copy's namespace before anything runs.
	Guards Guards
}

// StartStagedOptions tune StartStaged.
type StartStagedOptions struct {
	// Lazy restores the memory lazily (the stage's hold, GuardHold, must
	// be in place: it keeps the copy silent until every page is in).
	Lazy bool
	// Guards are lifted once the copy runs (with Lazy, once every page is
	// in). A migration lifts none here: its copy stays held until its
	// lease is pinned (SetGuards after the commit).
	Guards Guards
}

// RestoreResult reports a restore.
type RestoreResult struct {
	Did  string        `json:"did"`
	Lazy bool          `json:"lazy,omitempty"`
	Took time.Duration `json:"took_ns"`
	CRIU CRIUStats     `json:"criu"`
}

// ImageResult reports EnsureImage.
type ImageResult struct {
	// Did is "present", "pulled" or "imported".
	Did   string `json:"did"`
	Bytes int64  `json:"bytes,omitempty"`
}

// TransferResult reports a copy of an image between hosts.
type TransferResult struct {
	// Did is "fetched", or "exists" when the host had the image whole.
	Did   string `json:"did"`
	Bytes int64  `json:"bytes"`
	// Wire is what crossed the network (compressed).
	Wire  int64         `json:"wire_bytes"`
	Files int           `json:"files"`
	Took  time.Duration `json:"took_ns"`
}

// OfferKind is what an Offer is of.
type OfferKind string

const (
	OfferCheckpoint OfferKind = "checkpoint" // a checkpoint image (ImageName)
	OfferImage      OfferKind = "image"      // a container image (a reference)
)

// Offer is what a host lets a peer fetch.
type Offer struct {
	Kind OfferKind `json:"kind"`
	// Name is the ImageName of a checkpoint or the reference of an image.
	Name string `json:"name"`
	// To is the host allowed to fetch it.
	To string `json:"to"`
}

// Ticket authorises one fetch of an offer.
type Ticket string

// Peer is another host's agent, as a host dials it.
type Peer struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Ticket  Ticket `json:"ticket"`
}

// ClaimOptions tune ClaimAddress.
type ClaimOptions struct {
	// LastLook is how long to listen for another owner first (0: none).
	LastLook time.Duration
	// Lease is granted before the address is added.
	Lease Lease
}

// AnnounceOptions tune Announce.
type AnnounceOptions struct {
	Rounds   int
	Interval time.Duration
}

// ProbeResult says whether another station answered for an address.
type ProbeResult struct {
	Taken bool   `json:"taken"`
	By    string `json:"by,omitempty"` // its MAC
}

// SentryID names a running sentry on a host.
type SentryID string

// Guards are iptables rules in a migration destination's namespace.
type Guards uint8

const (
	// GuardResets drops TCP resets leaving the namespace: between the
	// address's arrival and CRIU's restore of the sockets, the kernel
	// would answer a client's retransmission with a reset.
	GuardResets Guards = 1 << iota
	// GuardHold drops every packet coming in but loopback's, and FINs
	// going out: a lazily restored copy runs before all its memory is in,
	// and no client request may reach it until it is.
	GuardHold
)

// Lease is a claim of a container's address on one host.
type Lease struct {
	IP netip.Addr `json:"ip"`
	// Generation grows with every placement of the container: a host
	// refuses a lease older than one it has seen.
	Generation uint64 `json:"generation"`
	// TTL is how long the lease lasts unless renewed; 0 pins it (it holds
	// until revoked).
	TTL time.Duration `json:"ttl_ns"`
	// NotAfter bounds the grant in wall-clock time: a lease lapses at
	// NotAfter at the latest, whatever its TTL, and a grant (a pin too)
	// that reaches the host after NotAfter is refused. A request delayed
	// in the network, even one a healed partition delivers late, can then
	// never extend a lease beyond what the plane counted on. It assumes
	// the hosts' clocks agree with the plane's within the clock skew the
	// plane is told of (NTP).
	NotAfter time.Time `json:"not_after,omitzero"`
	// Revoke fences the address now.
	Revoke bool `json:"revoke,omitempty"`
}

// LeaseState is a lease as the kernel holds it.
type LeaseState struct {
	Held       bool   `json:"held"`
	Generation uint64 `json:"generation,omitempty"`
	// Remaining is what is left of an expiring lease (0 when pinned or
	// not held); Pinned says it holds until revoked.
	Remaining time.Duration `json:"remaining_ns,omitempty"`
	Pinned    bool          `json:"pinned,omitempty"`
}

// ErrStaleGeneration means a lease is older than one the host has seen:
// the container has been placed elsewhere since.
var ErrStaleGeneration = errors.New("stale lease generation")

// ErrLeaseExpired means a grant reached the host after its NotAfter.
var ErrLeaseExpired = errors.New("lease grant arrived after its deadline")

// ErrRequestExpired means the host refused a request because it arrived
// after the wall-clock deadline the plane stamped on it: the host did
// nothing. Unlike ErrUnreachable it is an answer, and a definite one. Every
// request the plane sends carries such a deadline (the call's context's),
// so that one a healed partition delivers late is refused rather than
// applied whenever it lands; a call that went unanswered may land until its
// deadline (plus the hosts' clock skew), and not after.
var ErrRequestExpired = errors.New("request arrived after its deadline; refused, nothing done")

// ErrAddressTaken means another station answers for the address on the
// host's segment.
var ErrAddressTaken = errors.New("address taken by another station")

// ErrIncompleteImage means a checkpoint image does not hold a whole dump.
var ErrIncompleteImage = errors.New("incomplete checkpoint image")

// ErrTicket means an offer's ticket is unknown, expired, or was issued to
// another host.
var ErrTicket = errors.New("invalid transfer ticket")

// ErrUnreachable means the host's agent could not be reached: not that the
// host is dead. Its containers may still run; only a lapsed lease says
// they no longer serve their address.
var ErrUnreachable = errors.New("host unreachable")

// ImageName names a checkpoint image on a host, never a path: the agent
// places it in its own storage. It is one or more slash-separated
// elements of lower-case letters, digits, '.', '_' and '-', none starting
// with punctuation.
type ImageName string

var imageNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}(/[a-z0-9][a-z0-9_.-]{0,63}){0,7}$`)

// Validate rejects a name that is not an image name.
func (n ImageName) Validate() error {
	if !imageNameRE.MatchString(string(n)) {
		return fmt.Errorf("image name %q: want slash-separated [a-z0-9][a-z0-9_.-]* elements", string(n))
	}
	return nil
}

// CheckpointImage names a safe checkpoint of container id.
func CheckpointImage(id string, seq uint64, epoch uint64) ImageName {
	return ImageName(fmt.Sprintf("checkpoints/%s/%06d-e%d", id, seq, epoch))
}

// MigrationImage names the dump of one migration of container id.
func MigrationImage(id, migration string) ImageName {
	return ImageName(fmt.Sprintf("migrations/%s/%s", id, migration))
}
