package migrate

import (
	"context"
	"strconv"
	"time"
)

// A migration's journal: its steps, its record, and how it ended.

// Step is one step of a migration, in the order they run.
type Step int

const (
	StepNone  Step = iota
	StepImage      // the destination has the container's image (pulled, or imported from the source)
	// StepStage runs before anything is frozen: the destination's
	// namespace, interface, container object and (unstarted) restore task
	// are created while the source still serves.
	StepStage
	StepCheckpoint   // dump on the source, which stops it
	StepTransfer     // the dump fetched by the destination (no shared storage)
	StepPrepare      // the destination's namespace and interface (same MAC), checked
	StepMoveAddress  // the address leaves the source, joins the destination
	StepRestore      // restore on the destination
	StepCommit       // the destination's lease pinned: from here on, only forward
	StepAnnounce     // gratuitous ARP from the destination
	StepRemoveSource // delete the source copy
)

var stepNames = [...]string{"none", "image", "stage", "checkpoint", "transfer", "prepare", "move-address", "restore", "commit", "announce", "remove-source"}

func (s Step) String() string {
	if s >= 0 && int(s) < len(stepNames) {
		return stepNames[s]
	}
	return "step(" + strconv.Itoa(int(s)) + ")"
}

// Phase says what a journalled migration was doing.
type Phase string

const (
	PhaseForward       Phase = "forward"        // running the steps
	PhaseUndo          Phase = "undo"           // going back to the source
	PhaseCleanupSource Phase = "cleanup-source" // migrated; the source copy still to delete
	PhaseCleanupDest   Phase = "cleanup-dest"   // reverted; leftovers on the destination to delete
)

// Record is a migration's journal entry, written before and after every
// step so that a restarted plane can finish or undo it.
type Record struct {
	ID     string    `json:"id"`
	Spec   Spec      `json:"spec"`
	Source string    `json:"source"`
	Dest   string    `json:"dest"`
	Image  ImageName `json:"image"`
	Done   Step      `json:"done"`
	// Staged is set (and journalled) before the destination is staged, so
	// that an undo or a recovery clears it even if the dump never ran.
	Staged bool `json:"staged,omitempty"`
	// Lazy is set (and journalled) before the destination is staged when
	// its memory will be restored lazily; LazyDone once every page is in.
	// A lazy copy is never live without LazyDone: until then no packet
	// reaches it and Recover undoes rather than finishes.
	Lazy     bool `json:"lazy,omitempty"`
	LazyDone bool `json:"lazy_done,omitempty"`
	// Shared is set when the destination reads the source's dump from
	// storage both mount; otherwise the dump is fetched, agent to agent.
	Shared bool `json:"shared,omitempty"`
	// Generation is the newest lease generation granted for the
	// container: it is journalled before each grant, so that no
	// generation is ever granted twice.
	Generation uint64 `json:"generation"`
	// DestClaimed is set (and journalled) before the destination is
	// asked to claim the address: from then on an undo must take it back
	// first, or wait until its lease has lapsed.
	DestClaimed bool `json:"dest_claimed,omitempty"`
	// Committing is set (and journalled) before the destination's lease is
	// pinned: from then on only a destination that answers can be made to
	// give the address up, since a pinned lease never lapses.
	Committing bool      `json:"committing,omitempty"`
	Phase      Phase     `json:"phase"`
	Started    time.Time `json:"started"`
	// Updated is when the record was last written. It is written before
	// every step, and no request of a step outlives Updated plus the step
	// timeout: after a crash, Recover waits that (and the clock skew) out
	// before it acts, since the dead plane's requests may still land.
	Updated time.Time `json:"updated"`
	Error   string    `json:"error,omitempty"`
}

// Journal persists migration records, one per container.
type Journal interface {
	PutMigration(ctx context.Context, r Record) error
	Migrations(ctx context.Context) ([]Record, error)
	DeleteMigration(ctx context.Context, container string) error
}

// Event is passed to a Hook before each step and each undo action.
type Event struct {
	Step   Step
	Undo   bool
	Record Record
}

// Hook runs before every step (and undo of a step). An error it returns
// fails that step; tests use it to inject real faults at exact points.
type Hook func(ctx context.Context, ev Event) error

// Outcome is how a migration ended.
type Outcome string

const (
	Migrated Outcome = "migrated" // running on the destination
	Reverted Outcome = "reverted" // running on the source again
	Stuck    Outcome = "stuck"    // neither could be confirmed; journal kept
)

// Timing is how long one step (or its undo) took.
type Timing struct {
	Step     Step          `json:"step"`
	Undo     bool          `json:"undo,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	Err      string        `json:"error,omitempty"`
}

// Result reports a migration (or a recovery).
type Result struct {
	Record  Record   `json:"record"`
	Outcome Outcome  `json:"outcome"`
	Steps   []Timing `json:"steps"`
	// Frozen is the time from the start of the dump until the restored
	// copy can answer: its task started on the destination and, after a
	// lazy restore, all its memory in and its hold lifted.
	Frozen time.Duration `json:"frozen_ns"`
	// CRIU is CRIU's own account of the dump and the restore, when they ran.
	CRIU CRIUStats `json:"criu"`
	// Lazy is set when the destination's memory was restored lazily.
	Lazy bool `json:"lazy,omitempty"`
	// Transfer is the dump's copy to the destination, when the hosts do
	// not share storage.
	Transfer TransferResult `json:"transfer,omitzero"`
	// Pending is set when the outcome is final but cleanup remains (kept
	// in the journal for Recover).
	Pending string `json:"pending,omitempty"`
}

// CRIUStats is what CRIU itself reports about one dump and one restore
// (its stats-dump and stats-restore files), to tell CRIU's time apart from
// containerd's, runc's and the migrator's in a migration's frozen window.
type CRIUStats struct {
	// Freezing is how long CRIU took to freeze the tasks; Frozen how long
	// they stayed frozen in CRIU's dump (from frozen to dumped); MemDump
	// and MemWrite are the parts of it spent collecting and writing pages.
	Freezing time.Duration `json:"freezing_ns,omitempty"`
	Frozen   time.Duration `json:"frozen_ns,omitempty"`
	MemDump  time.Duration `json:"memdump_ns,omitempty"`
	MemWrite time.Duration `json:"memwrite_ns,omitempty"`
	// PagesWritten is the number of pages the dump wrote.
	PagesWritten uint64 `json:"pages_written,omitempty"`
	// Restore is CRIU's restore time (after forking the tree); Forking the
	// time to fork it.
	Forking time.Duration `json:"forking_ns,omitempty"`
	Restore time.Duration `json:"restore_ns,omitempty"`
}
