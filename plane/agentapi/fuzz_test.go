package agentapi

import (
	"context"
	"reflect"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi/agentpb"
)

// Decoding is the agent's first line against a plane that sends garbage:
// whatever bytes arrive as a request, the conversions (convert.go) and the
// server's checks answer a clear error or a value that passes its own
// validation, never a panic.

func seedMessages(f *testing.F, msgs ...proto.Message) {
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Add([]byte("\x0a\x05hello\x2a\x0c10.0.0.2/24"))
}

func FuzzSpecFromPB(f *testing.F) {
	seedMessages(f, specToPB(fullSpec), specToPB(minSpec), &agentpb.Spec{Ip: "10.0.0.2/32"}, &agentpb.Spec{Ip: "::1/64"},
		specToPB(adoptedSpec), specToPB(hostnetSpec))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m agentpb.Spec
		if proto.Unmarshal(data, &m) != nil {
			return
		}
		s, err := specFromPB(&m)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("decoded an invalid spec %+v: %v", s, err)
		}
		again, err := specFromPB(specToPB(s))
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", s, err)
		}
		if !reflect.DeepEqual(again, s) {
			t.Fatalf("round trip changed the spec:\n%+v\n%+v", s, again)
		}
	})
}

// FuzzAdoptableFromPB: an agent's list of adopted containers decodes
// within its bounds or not at all.
func FuzzAdoptableFromPB(f *testing.F) {
	seedMessages(f, specToPB(adoptedSpec), specToPB(hostnetSpec), &agentpb.Spec{Id: "x", Adopted: &agentpb.Adopted{}},
		&agentpb.Spec{Id: "x", Ip: "nope", Adopted: &agentpb.Adopted{Namespace: "default"}})
	f.Fuzz(func(t *testing.T, data []byte) {
		var m agentpb.Spec
		if proto.Unmarshal(data, &m) != nil {
			return
		}
		s, err := adoptableFromPB(&m)
		if err != nil {
			return
		}
		if s.Adopted == nil || len(s.ID) > 128 || len(s.Adopted.OCISpec) > migrate.MaxAdoptedSpec {
			t.Fatalf("decoded beyond the bounds: id of %d, adopted %v", len(s.ID), s.Adopted != nil)
		}
	})
}

func FuzzLeaseFromPB(f *testing.F) {
	seedMessages(f, leaseToPB(fullLease), leaseToPB(minLease), &agentpb.Lease{Ip: "10.0.0.2", TtlNs: -1},
		&agentpb.Lease{Ip: "fd00::1"}, &agentpb.Lease{Ip: "10.0.0.2", NotAfterUnixNs: -1 << 63})
	f.Fuzz(func(t *testing.T, data []byte) {
		var m agentpb.Lease
		if proto.Unmarshal(data, &m) != nil {
			return
		}
		l, err := leaseFromPB(&m)
		if err != nil {
			return
		}
		if !l.IP.Is4() || l.TTL < 0 {
			t.Fatalf("decoded a lease the wire cannot carry: %+v", l)
		}
		again, err := leaseFromPB(leaseToPB(l))
		if err != nil || !reflect.DeepEqual(again, l) {
			t.Fatalf("round trip: %+v -> %+v, %v", l, again, err)
		}
	})
}

func FuzzPeerFromPB(f *testing.F) {
	seedMessages(f, peerToPB(&peerH2), &agentpb.Peer{Name: "h2"})
	f.Fuzz(func(t *testing.T, data []byte) {
		var m agentpb.Peer
		if proto.Unmarshal(data, &m) != nil {
			return
		}
		p, err := peerFromPB(&m)
		if err != nil {
			return
		}
		if p == nil || p.Name == "" || p.Address == "" || p.Ticket == "" {
			t.Fatalf("decoded an incomplete peer %+v", p)
		}
		if q := peerToPB(p); q.GetName() != m.GetName() || q.GetAddress() != m.GetAddress() || q.GetTicket() != m.GetTicket() {
			t.Fatalf("round trip: %v -> %+v", &m, p)
		}
	})
}

// unaryMethods calls each unary step of a Server with a request decoded
// from data.
var unaryMethods = []struct {
	name string
	call func(ctx context.Context, s *Server, data []byte) (bool, error)
}{
	{"Status", decodeCall(func(ctx context.Context, s *Server, r *agentpb.ContainerRef) error {
		_, err := s.Status(ctx, r)
		return err
	})},
	{"Start", decodeCall(func(ctx context.Context, s *Server, r *agentpb.StartRequest) error {
		_, err := s.Start(ctx, r)
		return err
	})},
	{"Restart", decodeCall(func(ctx context.Context, s *Server, r *agentpb.SpecRequest) error {
		_, err := s.Restart(ctx, r)
		return err
	})},
	{"Kill", decodeCall(func(ctx context.Context, s *Server, r *agentpb.ContainerRef) error {
		_, err := s.Kill(ctx, r)
		return err
	})},
	{"Remove", decodeCall(func(ctx context.Context, s *Server, r *agentpb.ContainerRef) error {
		_, err := s.Remove(ctx, r)
		return err
	})},
	{"Checkpoint", decodeCall(func(ctx context.Context, s *Server, r *agentpb.CheckpointRequest) error {
		_, err := s.Checkpoint(ctx, r)
		return err
	})},
	{"Restore", decodeCall(func(ctx context.Context, s *Server, r *agentpb.RestoreRequest) error {
		_, err := s.Restore(ctx, r)
		return err
	})},
	{"Stage", decodeCall(func(ctx context.Context, s *Server, r *agentpb.StageRequest) error {
		_, err := s.Stage(ctx, r)
		return err
	})},
	{"StartStaged", decodeCall(func(ctx context.Context, s *Server, r *agentpb.StartStagedRequest) error {
		_, err := s.StartStaged(ctx, r)
		return err
	})},
	{"VerifyImage", decodeCall(func(ctx context.Context, s *Server, r *agentpb.ImageRef) error {
		_, err := s.VerifyImage(ctx, r)
		return err
	})},
	{"DropImage", decodeCall(func(ctx context.Context, s *Server, r *agentpb.ImageRef) error {
		_, err := s.DropImage(ctx, r)
		return err
	})},
	{"EnsureImage", decodeCall(func(ctx context.Context, s *Server, r *agentpb.EnsureImageRequest) error {
		_, err := s.EnsureImage(ctx, r)
		return err
	})},
	{"Offer", decodeCall(func(ctx context.Context, s *Server, r *agentpb.OfferRequest) error {
		_, err := s.Offer(ctx, r)
		return err
	})},
	{"Fetch", decodeCall(func(ctx context.Context, s *Server, r *agentpb.FetchRequest) error {
		_, err := s.Fetch(ctx, r)
		return err
	})},
	{"PrepareNetwork", decodeCall(func(ctx context.Context, s *Server, r *agentpb.NetworkRequest) error {
		_, err := s.PrepareNetwork(ctx, r)
		return err
	})},
	{"RemoveNetwork", decodeCall(func(ctx context.Context, s *Server, r *agentpb.ContainerRef) error {
		_, err := s.RemoveNetwork(ctx, r)
		return err
	})},
	{"ReleaseAddress", decodeCall(func(ctx context.Context, s *Server, r *agentpb.AddressRequest) error {
		_, err := s.ReleaseAddress(ctx, r)
		return err
	})},
	{"ClaimAddress", decodeCall(func(ctx context.Context, s *Server, r *agentpb.ClaimRequest) error {
		_, err := s.ClaimAddress(ctx, r)
		return err
	})},
	{"Announce", decodeCall(func(ctx context.Context, s *Server, r *agentpb.AnnounceRequest) error {
		_, err := s.Announce(ctx, r)
		return err
	})},
	{"Probe", decodeCall(func(ctx context.Context, s *Server, r *agentpb.ProbeRequest) error {
		_, err := s.Probe(ctx, r)
		return err
	})},
	{"StartSentry", decodeCall(func(ctx context.Context, s *Server, r *agentpb.ProbeRequest) error {
		_, err := s.StartSentry(ctx, r)
		return err
	})},
	{"StopSentry", decodeCall(func(ctx context.Context, s *Server, r *agentpb.SentryRef) error {
		_, err := s.StopSentry(ctx, r)
		return err
	})},
	{"SetGuards", decodeCall(func(ctx context.Context, s *Server, r *agentpb.GuardRequest) error {
		_, err := s.SetGuards(ctx, r)
		return err
	})},
	{"NetworkLocks", decodeCall(func(ctx context.Context, s *Server, r *agentpb.NetworkLocksRequest) error {
		_, err := s.NetworkLocks(ctx, r)
		return err
	})},
	{"Lease", decodeCall(func(ctx context.Context, s *Server, r *agentpb.LeaseRequest) error {
		_, err := s.Lease(ctx, r)
		return err
	})},
}

// decodeCall decodes data as the request type of f and calls it; false
// when data is no such message.
func decodeCall[R any, P interface {
	*R
	proto.Message
}](f func(ctx context.Context, s *Server, r P) error) func(ctx context.Context, s *Server, data []byte) (bool, error) {
	return func(ctx context.Context, s *Server, data []byte) (bool, error) {
		r := P(new(R))
		if proto.Unmarshal(data, r) != nil {
			return false, nil
		}
		return true, f(ctx, s, r)
	}
}

// FuzzServerRequests feeds every unary step garbage: the answer is
// InvalidArgument before the backend, or the backend's (here, success).
func FuzzServerRequests(f *testing.F) {
	good := []proto.Message{
		&agentpb.ContainerRef{Id: "c"},
		&agentpb.StartRequest{Spec: specToPB(fullSpec), Address: true, Lease: leaseToPB(fullLease)},
		&agentpb.SpecRequest{Spec: specToPB(minSpec)},
		&agentpb.CheckpointRequest{Id: "c", Image: "checkpoints/c/1", Exit: true},
		&agentpb.RestoreRequest{Spec: specToPB(fullSpec), Image: "m/1", Lazy: true},
		&agentpb.StageRequest{Spec: specToPB(fullSpec), Image: "m/1", Guards: 3},
		&agentpb.EnsureImageRequest{Ref: "busybox", From: peerToPB(&peerH2)},
		&agentpb.OfferRequest{Kind: "checkpoint", Name: "m/1", To: "h2"},
		&agentpb.FetchRequest{Image: "m/1", From: peerToPB(&peerH2)},
		&agentpb.ClaimRequest{Id: "c", Ip: "10.0.0.2/24", LastLookNs: 1e8, Lease: leaseToPB(minLease)},
		&agentpb.AnnounceRequest{Id: "c", Ip: "10.0.0.2", Rounds: 3, IntervalNs: 1e8},
		&agentpb.ProbeRequest{Ip: "10.0.0.2", DurationNs: 1e8},
		&agentpb.GuardRequest{Id: "c", Guards: 1, On: true},
		&agentpb.LeaseRequest{Id: "c", Lease: leaseToPB(fullLease)},
	}
	for i, m := range good {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		for k := range unaryMethods {
			if k%len(good) == i || k < 3 {
				f.Add(uint8(k), b)
			}
		}
	}
	f.Add(uint8(0), []byte{0x0a, 0x02, 0xff, 0xfe})
	host := newFakeHost("h1")
	s, err := NewServer(host, WithServerCredentials(insecure.NewCredentials()),
		WithCaller(func(context.Context) (Caller, error) { return Caller{Role: RolePlane, Name: "plane"}, nil }))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		m := unaryMethods[int(which)%len(unaryMethods)]
		host.mu.Lock()
		host.calls = host.calls[:0]
		host.mu.Unlock()
		decoded, err := m.call(context.Background(), s, data)
		if !decoded {
			return
		}
		n := host.ncalls()
		switch code := status.Code(toStatus(err)); {
		case err == nil && n != 1:
			t.Fatalf("%s: success without the backend (%d calls)", m.name, n)
		case err == nil:
		case code == codes.InvalidArgument && n == 0 && err.Error() != "":
		default:
			t.Fatalf("%s: %v (%s) after %d backend calls: want InvalidArgument before the backend", m.name, err, code, n)
		}
	})
}

// The seeds alone, as a plain test: every good request reaches the
// backend.
func TestServerRequestsSeeds(t *testing.T) {
	host := newFakeHost("h1")
	s, err := NewServer(host, WithServerCredentials(insecure.NewCredentials()),
		WithCaller(func(context.Context) (Caller, error) { return Caller{}, nil }))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := proto.Marshal(&agentpb.StartRequest{Spec: specToPB(fullSpec), Address: true, Lease: leaseToPB(fullLease)})
	if ok, err := unaryMethods[1].call(context.Background(), s, b); !ok || err != nil {
		t.Fatalf("start: %v", err)
	}
	last, _ := host.lastCall()
	if !reflect.DeepEqual(last.Args, []any{fullSpec, migrate.StartOptions{Address: true, Lease: fullLease}}) {
		t.Fatalf("backend got %+v", last.Args)
	}
}
