package agentapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi/agentpb"
)

var (
	fullSpec = migrate.Spec{ID: "redis-1", Image: "escape.local/redis:7", Args: []string{"redis-server", "--port", "6379", ""},
		Env: []string{"A=1", "B="}, IP: netip.MustParsePrefix("198.18.1.10/15"), MAC: "02:42:c6:12:01:0a",
		MemoryLimit: 256 << 20, NetworkLock: "nftables", Labels: map[string]string{"app": "redis", "tier": ""}}
	// minSpec has every optional field at its zero value.
	minSpec   = migrate.Spec{ID: "c", Image: "busybox", IP: netip.MustParsePrefix("10.0.0.2/24"), MAC: "02:00:00:00:00:01"}
	fullLease = migrate.Lease{IP: netip.MustParseAddr("198.18.1.10"), Generation: 1<<63 + 7, TTL: 1500 * time.Millisecond,
		NotAfter: time.Unix(1_800_000_000, 123_456_789), Revoke: true}
	// minLease is the least a lease carries: its address.
	minLease  = migrate.Lease{IP: netip.MustParseAddr("10.0.0.2")}
	fullStats = migrate.CRIUStats{Freezing: 1, Frozen: 2 * time.Millisecond, MemDump: 3 * time.Second, MemWrite: 4,
		PagesWritten: 1 << 40, Forking: 6, Restore: 7 * time.Hour}
	peerH2 = migrate.Peer{Name: "h2", Address: "127.0.0.1:7443", Ticket: "0123abcd"}
	// adoptedSpec is a user's container the plane adopted, movable.
	adoptedSpec = migrate.Spec{ID: strings.Repeat("0f", 32), Image: "docker.io/library/redis:7", Args: []string{"redis-server"},
		IP: netip.MustParsePrefix("198.18.1.200/15"), MAC: "02:e5:c6:12:01:c8", Labels: map[string]string{migrate.AdoptLabel: "true"},
		Adopted: &migrate.Adopted{Namespace: "default", OCISpec: []byte(`{"ociVersion":"1.2.1"}`), Snapshotter: "overlayfs",
			Runtime: "io.containerd.runc.v2", Netns: "/run/netns/user-db", Link: "eth0", Status: migrate.Running, Movable: true, Rollback: true}}
	// hostnetSpec is one on the host's network: no address, rolled back
	// in place only.
	hostnetSpec = migrate.Spec{ID: "web", Image: "docker.io/library/nginx:1", Labels: map[string]string{migrate.AdoptLabel: "true"},
		Adopted: &migrate.Adopted{Namespace: "k8s.io", Rollback: true, Refusals: []string{"it shares the host's network namespace"}}}
)

// rtCase is one Client call through the server to the backend and back.
type rtCase struct {
	name   string
	method string // the backend's
	ret    any    // what the backend answers
	call   func(ctx context.Context, c *Client) (any, error)
	args   []any // what the backend must see
	want   any   // what the client must return; nil: ret
}

func roundTripCases() []rtCase {
	return []rtCase{
		{"hello", "Hello", migrate.HostInfo{Name: "h1", Version: "v1.2.3", SharedStorage: "nfs:/x", LazyRestore: true, BootID: "b00t"},
			func(ctx context.Context, c *Client) (any, error) { return c.Hello(ctx) }, nil, nil},
		{"hello zero", "Hello", migrate.HostInfo{},
			func(ctx context.Context, c *Client) (any, error) { return c.Hello(ctx) }, nil, nil},
		{"status full", "Status", migrate.ContainerStatus{Status: migrate.Running, PID: 4242, MemoryBytes: 1 << 33, Network: true,
			Addresses:    []netip.Prefix{netip.MustParsePrefix("198.18.1.10/15"), netip.MustParsePrefix("10.1.2.3/32")},
			NetworkLocks: []string{"CRIU", "filter"}, Lease: migrate.LeaseState{Held: true, Generation: 9, Remaining: 2 * time.Second}},
			func(ctx context.Context, c *Client) (any, error) { return c.Status(ctx, "redis-1") }, []any{"redis-1"}, nil},
		{"status pinned", "Status", migrate.ContainerStatus{Status: migrate.Paused, Lease: migrate.LeaseState{Held: true, Generation: 1, Pinned: true}},
			func(ctx context.Context, c *Client) (any, error) { return c.Status(ctx, "c") }, []any{"c"}, nil},
		{"status zero", "Status", migrate.ContainerStatus{},
			func(ctx context.Context, c *Client) (any, error) { return c.Status(ctx, "c") }, []any{"c"}, nil},
		{"start with address", "Start", migrate.StepResult{Did: "created"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.Start(ctx, fullSpec, migrate.StartOptions{Address: true, Lease: fullLease})
			}, []any{fullSpec, migrate.StartOptions{Address: true, Lease: fullLease}}, nil},
		{"start without address", "Start", migrate.StepResult{Did: "already running"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.Start(ctx, minSpec, migrate.StartOptions{})
			},
			[]any{minSpec, migrate.StartOptions{}}, nil},
		{"start min lease", "Start", migrate.StepResult{},
			func(ctx context.Context, c *Client) (any, error) {
				return c.Start(ctx, minSpec, migrate.StartOptions{Address: true, Lease: minLease})
			}, []any{minSpec, migrate.StartOptions{Address: true, Lease: minLease}}, nil},
		{"restart", "Restart", migrate.StepResult{Did: "restarted"},
			func(ctx context.Context, c *Client) (any, error) { return c.Restart(ctx, fullSpec) }, []any{fullSpec}, nil},
		{"kill", "Kill", migrate.StepResult{Did: "killed"},
			func(ctx context.Context, c *Client) (any, error) { return c.Kill(ctx, "c") }, []any{"c"}, nil},
		{"remove", "Remove", migrate.StepResult{Did: "absent"},
			func(ctx context.Context, c *Client) (any, error) { return c.Remove(ctx, "c-2.x_y") }, []any{"c-2.x_y"}, nil},
		{"checkpoint all options", "Checkpoint", migrate.CheckpointResult{Did: "dumped", Bytes: 1 << 35, Took: 1234567 * time.Microsecond, CRIU: fullStats},
			func(ctx context.Context, c *Client) (any, error) {
				return c.Checkpoint(ctx, "c", "checkpoints/c/000001-e2", migrate.CheckpointOptions{Exit: true, Paused: true, RootFS: true})
			}, []any{"c", migrate.ImageName("checkpoints/c/000001-e2"), migrate.CheckpointOptions{Exit: true, Paused: true, RootFS: true}}, nil},
		{"checkpoint zero", "Checkpoint", migrate.CheckpointResult{},
			func(ctx context.Context, c *Client) (any, error) {
				return c.Checkpoint(ctx, "c", "x", migrate.CheckpointOptions{})
			}, []any{"c", migrate.ImageName("x"), migrate.CheckpointOptions{}}, nil},
		{"restore all options", "Restore", migrate.RestoreResult{Did: "restored", Lazy: true, Took: time.Second, CRIU: fullStats},
			func(ctx context.Context, c *Client) (any, error) {
				return c.Restore(ctx, fullSpec, "migrations/redis-1/m1", migrate.RestoreOptions{Lazy: true, ClearLocks: true, TCPClose: true, Fresh: true})
			}, []any{fullSpec, migrate.ImageName("migrations/redis-1/m1"), migrate.RestoreOptions{Lazy: true, ClearLocks: true, TCPClose: true, Fresh: true}}, nil},
		{"restore adopted", "Restore", migrate.RestoreResult{Did: "restored"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.Restore(ctx, adoptedSpec, "checkpoints/x/000001-e1", migrate.RestoreOptions{TCPClose: true})
			}, []any{adoptedSpec, migrate.ImageName("checkpoints/x/000001-e1"), migrate.RestoreOptions{TCPClose: true}}, nil},
		{"restore adopted without an address", "Restore", migrate.RestoreResult{Did: "restored"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.Restore(ctx, hostnetSpec, "x", migrate.RestoreOptions{})
			}, []any{hostnetSpec, migrate.ImageName("x"), migrate.RestoreOptions{}}, nil},
		{"adoptable", "Adoptable", []migrate.Spec{adoptedSpec, hostnetSpec},
			func(ctx context.Context, c *Client) (any, error) { return c.Adoptable(ctx) }, nil, nil},
		{"adoptable none", "Adoptable", []migrate.Spec{},
			func(ctx context.Context, c *Client) (any, error) { return c.Adoptable(ctx) }, nil, nil},
		{"restore zero", "Restore", migrate.RestoreResult{},
			func(ctx context.Context, c *Client) (any, error) {
				return c.Restore(ctx, minSpec, "x", migrate.RestoreOptions{})
			}, []any{minSpec, migrate.ImageName("x"), migrate.RestoreOptions{}}, nil},
		{"stage guards", "Stage", migrate.StepResult{Did: "staged"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.Stage(ctx, fullSpec, "m/1", migrate.StageOptions{Guards: migrate.GuardResets | migrate.GuardHold})
			}, []any{fullSpec, migrate.ImageName("m/1"), migrate.StageOptions{Guards: migrate.GuardResets | migrate.GuardHold}}, nil},
		{"stage zero", "Stage", migrate.StepResult{},
			func(ctx context.Context, c *Client) (any, error) {
				return c.Stage(ctx, minSpec, "m/1", migrate.StageOptions{})
			},
			[]any{minSpec, migrate.ImageName("m/1"), migrate.StageOptions{}}, nil},
		{"start staged", "StartStaged", migrate.RestoreResult{Did: "started", Lazy: true, Took: 3, CRIU: fullStats},
			func(ctx context.Context, c *Client) (any, error) {
				return c.StartStaged(ctx, fullSpec, "m/1", migrate.StartStagedOptions{Lazy: true, Guards: migrate.GuardHold})
			}, []any{fullSpec, migrate.ImageName("m/1"), migrate.StartStagedOptions{Lazy: true, Guards: migrate.GuardHold}}, nil},
		{"start staged zero", "StartStaged", migrate.RestoreResult{},
			func(ctx context.Context, c *Client) (any, error) {
				return c.StartStaged(ctx, minSpec, "m/1", migrate.StartStagedOptions{})
			}, []any{minSpec, migrate.ImageName("m/1"), migrate.StartStagedOptions{}}, nil},
		{"verify image", "VerifyImage", int64(1<<40 + 1),
			func(ctx context.Context, c *Client) (any, error) { return c.VerifyImage(ctx, "checkpoints/c/1") },
			[]any{migrate.ImageName("checkpoints/c/1")}, nil},
		{"verify image zero", "VerifyImage", int64(0),
			func(ctx context.Context, c *Client) (any, error) { return c.VerifyImage(ctx, "x") }, []any{migrate.ImageName("x")}, nil},
		{"drop image", "DropImage", migrate.StepResult{Did: "dropped"},
			func(ctx context.Context, c *Client) (any, error) { return c.DropImage(ctx, "x/y") }, []any{migrate.ImageName("x/y")}, nil},
		{"ensure image from registry", "EnsureImage", migrate.ImageResult{Did: "pulled", Bytes: 12345},
			func(ctx context.Context, c *Client) (any, error) {
				return c.EnsureImage(ctx, "escape.local/redis:7", nil)
			},
			[]any{"escape.local/redis:7", (*migrate.Peer)(nil)}, nil},
		{"ensure image from peer", "EnsureImage", migrate.ImageResult{Did: "imported"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.EnsureImage(ctx, "busybox:latest", &peerH2)
			},
			[]any{"busybox:latest", &peerH2}, nil},
		{"offer checkpoint", "Offer", migrate.Ticket("t-123"),
			func(ctx context.Context, c *Client) (any, error) {
				return c.Offer(ctx, migrate.Offer{Kind: migrate.OfferCheckpoint, Name: "checkpoints/c/1", To: "h2"})
			}, []any{migrate.Offer{Kind: migrate.OfferCheckpoint, Name: "checkpoints/c/1", To: "h2"}}, nil},
		{"offer image", "Offer", migrate.Ticket("t-9"),
			func(ctx context.Context, c *Client) (any, error) {
				return c.Offer(ctx, migrate.Offer{Kind: migrate.OfferImage, Name: "escape.local/redis:7", To: "h3"})
			}, []any{migrate.Offer{Kind: migrate.OfferImage, Name: "escape.local/redis:7", To: "h3"}}, nil},
		{"fetch", "Fetch", migrate.TransferResult{Did: "fetched", Bytes: 1 << 34, Wire: 1 << 30, Files: 17, Took: 9 * time.Second},
			func(ctx context.Context, c *Client) (any, error) { return c.Fetch(ctx, "m/1", peerH2) },
			[]any{migrate.ImageName("m/1"), peerH2}, nil},
		{"fetch exists", "Fetch", migrate.TransferResult{Did: "exists", Bytes: 10},
			func(ctx context.Context, c *Client) (any, error) { return c.Fetch(ctx, "m/1", peerH2) },
			[]any{migrate.ImageName("m/1"), peerH2}, nil},
		{"prepare network with address", "PrepareNetwork", migrate.StepResult{Did: "created"},
			func(ctx context.Context, c *Client) (any, error) { return c.PrepareNetwork(ctx, fullSpec, true) }, []any{fullSpec, true}, nil},
		{"prepare network without", "PrepareNetwork", migrate.StepResult{},
			func(ctx context.Context, c *Client) (any, error) { return c.PrepareNetwork(ctx, minSpec, false) }, []any{minSpec, false}, nil},
		{"remove network", "RemoveNetwork", migrate.StepResult{Did: "removed"},
			func(ctx context.Context, c *Client) (any, error) { return c.RemoveNetwork(ctx, "c") }, []any{"c"}, nil},
		{"release address", "ReleaseAddress", migrate.StepResult{Did: "released"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.ReleaseAddress(ctx, "c", netip.MustParsePrefix("198.18.1.10/15"))
			}, []any{"c", netip.MustParsePrefix("198.18.1.10/15")}, nil},
		{"claim address", "ClaimAddress", migrate.StepResult{Did: "claimed"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.ClaimAddress(ctx, "c", netip.MustParsePrefix("198.18.1.10/15"), migrate.ClaimOptions{LastLook: 150 * time.Millisecond, Lease: fullLease})
			}, []any{"c", netip.MustParsePrefix("198.18.1.10/15"), migrate.ClaimOptions{LastLook: 150 * time.Millisecond, Lease: fullLease}}, nil},
		{"claim address no last look", "ClaimAddress", migrate.StepResult{},
			func(ctx context.Context, c *Client) (any, error) {
				return c.ClaimAddress(ctx, "c", netip.MustParsePrefix("10.0.0.2/24"), migrate.ClaimOptions{Lease: minLease})
			}, []any{"c", netip.MustParsePrefix("10.0.0.2/24"), migrate.ClaimOptions{Lease: minLease}}, nil},
		{"announce", "Announce", migrate.StepResult{Did: "announced"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.Announce(ctx, "c", netip.MustParseAddr("198.18.1.10"), migrate.AnnounceOptions{Rounds: 3, Interval: 200 * time.Millisecond})
			}, []any{"c", netip.MustParseAddr("198.18.1.10"), migrate.AnnounceOptions{Rounds: 3, Interval: 200 * time.Millisecond}}, nil},
		{"announce no interval", "Announce", migrate.StepResult{},
			func(ctx context.Context, c *Client) (any, error) {
				return c.Announce(ctx, "c", netip.MustParseAddr("10.0.0.2"), migrate.AnnounceOptions{Rounds: 1})
			}, []any{"c", netip.MustParseAddr("10.0.0.2"), migrate.AnnounceOptions{Rounds: 1}}, nil},
		{"probe taken", "Probe", migrate.ProbeResult{Taken: true, By: "02:00:00:00:00:09"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.Probe(ctx, netip.MustParseAddr("198.18.1.10"), "02:42:c6:12:01:0a", 300*time.Millisecond)
			}, []any{netip.MustParseAddr("198.18.1.10"), "02:42:c6:12:01:0a", 300 * time.Millisecond}, nil},
		{"probe zero", "Probe", migrate.ProbeResult{},
			func(ctx context.Context, c *Client) (any, error) {
				return c.Probe(ctx, netip.MustParseAddr("10.0.0.2"), "", 0)
			},
			[]any{netip.MustParseAddr("10.0.0.2"), "", time.Duration(0)}, nil},
		{"start sentry", "StartSentry", migrate.SentryID("s-1"),
			func(ctx context.Context, c *Client) (any, error) {
				return c.StartSentry(ctx, netip.MustParseAddr("198.18.1.10"), "02:42:c6:12:01:0a", 10*time.Minute)
			}, []any{netip.MustParseAddr("198.18.1.10"), "02:42:c6:12:01:0a", 10 * time.Minute}, nil},
		{"stop sentry", "StopSentry", migrate.ProbeResult{Taken: true, By: "02:00:00:00:00:09"},
			func(ctx context.Context, c *Client) (any, error) { return c.StopSentry(ctx, "s-1") }, []any{migrate.SentryID("s-1")}, nil},
		{"set guards on", "SetGuards", migrate.StepResult{Did: "set"},
			func(ctx context.Context, c *Client) (any, error) {
				return c.SetGuards(ctx, "c", migrate.GuardHold, true)
			},
			[]any{"c", migrate.GuardHold, true}, nil},
		{"set guards none off", "SetGuards", migrate.StepResult{},
			func(ctx context.Context, c *Client) (any, error) { return c.SetGuards(ctx, "c", 0, false) },
			[]any{"c", migrate.Guards(0), false}, nil},
		{"network locks remove", "NetworkLocks", []string{"CRIU", "nat"},
			func(ctx context.Context, c *Client) (any, error) { return c.NetworkLocks(ctx, "c", true) }, []any{"c", true}, nil},
		{"network locks none", "NetworkLocks", []string(nil),
			func(ctx context.Context, c *Client) (any, error) { return c.NetworkLocks(ctx, "c", false) }, []any{"c", false}, nil},
		{"lease full", "Lease", migrate.LeaseState{Held: true, Generation: 1<<63 + 7, Remaining: 1499 * time.Millisecond},
			func(ctx context.Context, c *Client) (any, error) { return c.Lease(ctx, "c", fullLease) }, []any{"c", fullLease}, nil},
		{"lease pin", "Lease", migrate.LeaseState{Held: true, Generation: 2, Pinned: true},
			func(ctx context.Context, c *Client) (any, error) { return c.Lease(ctx, "c", minLease) }, []any{"c", minLease}, nil},
	}
}

// Every Client method carries its arguments to the backend and its result
// back unchanged, options and zero values included.
func TestRoundTrip(t *testing.T) {
	p := newPKI(t)
	a := startAgent(t, p, idH1, agentOpts{})
	c := dial(t, newSource(t, p.files(t, idPlane, nil)), a)
	covered := map[string]bool{}
	for _, tc := range roundTripCases() {
		t.Run(tc.name, func(t *testing.T) {
			a.host.set(tc.method, tc.ret, nil)
			before := a.host.ncalls()
			got, err := tc.call(testCtx(t), c)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			last, n := a.host.lastCall()
			if n != before+1 {
				t.Fatalf("backend saw %d calls, want 1", n-before)
			}
			if last.Method != tc.method {
				t.Fatalf("backend got %s, want %s", last.Method, tc.method)
			}
			if tc.args == nil {
				tc.args = []any{}
			}
			if last.Args == nil {
				last.Args = []any{}
			}
			if !reflect.DeepEqual(last.Args, tc.args) {
				t.Errorf("backend arguments\n got %#v\nwant %#v", last.Args, tc.args)
			}
			want := tc.want
			if want == nil {
				want = tc.ret
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("client result\n got %#v\nwant %#v", got, want)
			}
			covered[tc.method] = true
		})
	}
	// Every step of migrate.Host is in the table.
	ht := reflect.TypeOf((*migrate.Host)(nil)).Elem()
	for i := range ht.NumMethod() {
		if m := ht.Method(i).Name; m != "Name" && m != "Close" && !covered[m] {
			t.Errorf("migrate.Host.%s has no round-trip case", m)
		}
	}
}

// Each sentinel the backend returns, however wrapped, is the same
// sentinel at the client, with the backend's message; other errors match
// none of them.
func TestErrorMapping(t *testing.T) {
	p := newPKI(t)
	a := startAgent(t, p, idH1, agentOpts{})
	c := dial(t, newSource(t, p.files(t, idPlane, nil)), a)
	all := []error{migrate.ErrStaleGeneration, migrate.ErrLeaseExpired, migrate.ErrAddressTaken, migrate.ErrIncompleteImage,
		migrate.ErrTicket, migrate.ErrUnreachable}
	for _, sentinel := range all[:5] {
		t.Run(sentinel.Error(), func(t *testing.T) {
			a.host.set("Lease", nil, fmt.Errorf("lease of c: generation 3 after 5: %w", sentinel))
			_, err := c.Lease(testCtx(t), "c", minLease)
			if !errors.Is(err, sentinel) {
				t.Fatalf("error %v is not %v", err, sentinel)
			}
			for _, other := range all {
				if other != sentinel && errors.Is(err, other) {
					t.Errorf("error %v also matches %v", err, other)
				}
			}
			for _, want := range []string{"lease of c on h1", "generation 3 after 5", sentinel.Error()} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
	t.Run("plain error", func(t *testing.T) {
		a.host.set("Kill", nil, errors.New("containerd: task not found"))
		_, err := c.Kill(testCtx(t), "c")
		if err == nil || !strings.Contains(err.Error(), "containerd: task not found") || !strings.Contains(err.Error(), "Internal") {
			t.Fatalf("error %v: want the backend's message, Internal", err)
		}
		for _, s := range all {
			if errors.Is(err, s) {
				t.Errorf("a plain error matches %v", s)
			}
		}
	})
	// The backend's own ErrUnreachable (it could not reach a third host)
	// must not make the plane think this host is unreachable.
	t.Run("backend unreachable", func(t *testing.T) {
		a.host.set("Fetch", nil, fmt.Errorf("fetch from h2: %w", migrate.ErrUnreachable))
		_, err := c.Fetch(testCtx(t), "m/1", peerH2)
		if err == nil || errors.Is(err, migrate.ErrUnreachable) {
			t.Fatalf("error %v: a backend's unreachable peer is not this host unreachable", err)
		}
	})
	// A step that ran out of time on the agent is unknown to the plane, as
	// for an unreachable host.
	t.Run("deadline", func(t *testing.T) {
		a.host.set("Checkpoint", nil, fmt.Errorf("criu dump: %w", context.DeadlineExceeded))
		_, err := c.Checkpoint(testCtx(t), "c", "x", migrate.CheckpointOptions{})
		if !errors.Is(err, migrate.ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error %v: want unreachable and deadline exceeded", err)
		}
	})
}

// A request the wire cannot carry faithfully is refused with
// InvalidArgument before the backend sees it, and the Client says so.
func TestInvalidArgument(t *testing.T) {
	p := newPKI(t)
	a := startAgent(t, p, idH1, agentOpts{})
	plane := newSource(t, p.files(t, idPlane, nil))
	_, raw := rawConn(t, plane, a.addr, idH1)
	c := dial(t, plane, a)
	badSpec := fullSpec
	badSpec.MAC = "01:00:00:00:00:01" // multicast
	pbLease := leaseToPB(minLease)
	for _, tc := range []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"status bad id", func(ctx context.Context) error {
			_, err := raw.Status(ctx, &agentpb.ContainerRef{Id: "../etc"})
			return err
		}},
		{"status empty id", func(ctx context.Context) error { _, err := raw.Status(ctx, &agentpb.ContainerRef{}); return err }},
		{"start no spec", func(ctx context.Context) error { _, err := raw.Start(ctx, &agentpb.StartRequest{}); return err }},
		{"start bad spec", func(ctx context.Context) error {
			_, err := raw.Start(ctx, &agentpb.StartRequest{Spec: specToPB(badSpec)})
			return err
		}},
		{"start address without lease", func(ctx context.Context) error {
			_, err := raw.Start(ctx, &agentpb.StartRequest{Spec: specToPB(minSpec), Address: true})
			return err
		}},
		{"spec ip not a prefix", func(ctx context.Context) error {
			s := specToPB(minSpec)
			s.Ip = "10.0.0.2"
			_, err := raw.Restart(ctx, &agentpb.SpecRequest{Spec: s})
			return err
		}},
		{"checkpoint path image", func(ctx context.Context) error {
			_, err := raw.Checkpoint(ctx, &agentpb.CheckpointRequest{Id: "c", Image: "../../etc"})
			return err
		}},
		{"stage unknown guards", func(ctx context.Context) error {
			_, err := raw.Stage(ctx, &agentpb.StageRequest{Spec: specToPB(minSpec), Image: "x", Guards: 1 << 7})
			return err
		}},
		{"ensure image path", func(ctx context.Context) error {
			_, err := raw.EnsureImage(ctx, &agentpb.EnsureImageRequest{Ref: "/var/lib/x"})
			return err
		}},
		{"ensure image half a peer", func(ctx context.Context) error {
			_, err := raw.EnsureImage(ctx, &agentpb.EnsureImageRequest{Ref: "busybox", From: &agentpb.Peer{Name: "h2"}})
			return err
		}},
		{"offer unknown kind", func(ctx context.Context) error {
			_, err := raw.Offer(ctx, &agentpb.OfferRequest{Kind: "file", Name: "x", To: "h2"})
			return err
		}},
		{"offer to nobody", func(ctx context.Context) error {
			_, err := raw.Offer(ctx, &agentpb.OfferRequest{Kind: "checkpoint", Name: "x"})
			return err
		}},
		{"fetch no peer", func(ctx context.Context) error {
			_, err := raw.Fetch(ctx, &agentpb.FetchRequest{Image: "x"})
			return err
		}},
		{"release ipv6", func(ctx context.Context) error {
			_, err := raw.ReleaseAddress(ctx, &agentpb.AddressRequest{Id: "c", Ip: "fd00::1/64"})
			return err
		}},
		{"claim negative last look", func(ctx context.Context) error {
			_, err := raw.ClaimAddress(ctx, &agentpb.ClaimRequest{Id: "c", Ip: "10.0.0.2/24", LastLookNs: -1, Lease: pbLease})
			return err
		}},
		{"claim no lease", func(ctx context.Context) error {
			_, err := raw.ClaimAddress(ctx, &agentpb.ClaimRequest{Id: "c", Ip: "10.0.0.2/24"})
			return err
		}},
		{"announce zero rounds", func(ctx context.Context) error {
			_, err := raw.Announce(ctx, &agentpb.AnnounceRequest{Id: "c", Ip: "10.0.0.2"})
			return err
		}},
		{"probe too long", func(ctx context.Context) error {
			_, err := raw.Probe(ctx, &agentpb.ProbeRequest{Ip: "10.0.0.2", DurationNs: int64(11 * time.Minute)})
			return err
		}},
		{"lease negative ttl", func(ctx context.Context) error {
			_, err := raw.Lease(ctx, &agentpb.LeaseRequest{Id: "c", Lease: &agentpb.Lease{Ip: "10.0.0.2", TtlNs: -1}})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := a.host.ncalls()
			err := tc.call(testCtx(t))
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("error %v: want InvalidArgument", err)
			}
			if n := a.host.ncalls(); n != before {
				t.Errorf("the backend saw an invalid request")
			}
		})
	}
	// Through the Client: the code is in the message, and no sentinel.
	_, err := c.Status(testCtx(t), "Not/An/ID")
	if err == nil || !strings.Contains(err.Error(), "InvalidArgument") || errors.Is(err, migrate.ErrUnreachable) {
		t.Fatalf("client error %v: want InvalidArgument, not unreachable", err)
	}
	_, err = c.Announce(testCtx(t), "c", netip.MustParseAddr("10.0.0.2"), migrate.AnnounceOptions{Rounds: 1 << 32})
	if err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Fatalf("announce with rounds wrapping int32: %v, want InvalidArgument", err)
	}
}

// A host the plane cannot reach is migrate.ErrUnreachable, within the
// call's deadline: a stopped agent, a port nobody listens on, and one
// that accepts but never speaks.
func TestUnreachable(t *testing.T) {
	p := newPKI(t)
	plane := newSource(t, p.files(t, idPlane, nil))
	check := func(t *testing.T, c *Client, deadline time.Duration) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		_, err := c.Hello(ctx)
		took := time.Since(start)
		if !errors.Is(err, migrate.ErrUnreachable) {
			t.Fatalf("error %v: want migrate.ErrUnreachable", err)
		}
		if took > deadline+500*time.Millisecond {
			t.Fatalf("took %v, beyond the %v deadline", took, deadline)
		}
		return err
	}
	t.Run("stopped agent", func(t *testing.T) {
		a := startAgent(t, p, idH1, agentOpts{})
		c := dial(t, plane, a)
		if _, err := c.Hello(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		if err := a.stop(); err != nil {
			t.Fatal(err)
		}
		check(t, c, 5*time.Second)
	})
	t.Run("nobody listens", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		check(t, dialAs(t, plane, addr, idH1), 5*time.Second)
	})
	t.Run("silent", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		err = check(t, dialAs(t, plane, l.Addr().String(), idH1), time.Second)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v: want deadline exceeded too", err)
		}
	})
}

// Many goroutines share one Client: each gets the answer to its own call.
func TestConcurrentCalls(t *testing.T) {
	p := newPKI(t)
	a := startAgent(t, p, idH1, agentOpts{})
	c := dial(t, newSource(t, p.files(t, idPlane, nil)), a)
	a.host.set("Status", func(args []any) any {
		var pid uint32
		fmt.Sscanf(args[0].(string), "c%d", &pid)
		return migrate.ContainerStatus{Status: migrate.Running, PID: pid}
	}, nil)
	const workers, calls = 32, 25
	errc := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range calls {
				id := w*calls + i + 1
				st, err := c.Status(context.Background(), fmt.Sprintf("c%d", id))
				if err == nil && st.PID != uint32(id) {
					err = fmt.Errorf("status of c%d answered pid %d", id, st.PID)
				}
				if err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range workers {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if n := a.host.ncalls(); n != workers*calls {
		t.Fatalf("backend saw %d calls, want %d", n, workers*calls)
	}
}
