package agentapi

// The image steps of the agent API, and the agent-to-agent Transfer that
// serves an offer.

import (
	"bufio"
	"context"
	"errors"
	"fmt"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi/agentpb"
)

func (s *Server) VerifyImage(ctx context.Context, r *agentpb.ImageRef) (*agentpb.VerifyImageReply, error) {
	img, err := imageName(r.GetImage())
	if err != nil {
		return nil, errInvalid{err}
	}
	n, err := s.local.VerifyImage(ctx, img)
	if err != nil {
		return nil, err
	}
	return &agentpb.VerifyImageReply{Bytes: n}, nil
}

func (s *Server) DropImage(ctx context.Context, r *agentpb.ImageRef) (*agentpb.StepReply, error) {
	img, err := imageName(r.GetImage())
	if err != nil {
		return nil, errInvalid{err}
	}
	return step(s.local.DropImage(ctx, img))
}

func (s *Server) EnsureImage(ctx context.Context, r *agentpb.EnsureImageRequest) (*agentpb.EnsureImageReply, error) {
	if err := migrate.ValidImageRef(r.GetRef()); err != nil {
		return nil, errInvalid{err}
	}
	from, err := peerFromPB(r.GetFrom())
	if err != nil {
		return nil, errInvalid{err}
	}
	res, err := s.local.EnsureImage(ctx, r.GetRef(), from)
	if err != nil {
		return nil, err
	}
	return &agentpb.EnsureImageReply{Did: res.Did, Bytes: res.Bytes}, nil
}

func (s *Server) Offer(ctx context.Context, r *agentpb.OfferRequest) (*agentpb.OfferReply, error) {
	o := migrate.Offer{Kind: migrate.OfferKind(r.GetKind()), Name: r.GetName(), To: r.GetTo()}
	switch o.Kind {
	case migrate.OfferCheckpoint:
		if _, err := imageName(o.Name); err != nil {
			return nil, errInvalid{err}
		}
	case migrate.OfferImage:
		if err := migrate.ValidImageRef(o.Name); err != nil {
			return nil, errInvalid{err}
		}
	default:
		return nil, invalid("offer: kind %q: want checkpoint or image", r.GetKind())
	}
	if o.To == "" {
		return nil, invalid("offer: to: the host allowed to fetch it is required")
	}
	t, err := s.local.Offer(ctx, o)
	if err != nil {
		return nil, err
	}
	return &agentpb.OfferReply{Ticket: string(t)}, nil
}

func (s *Server) Fetch(ctx context.Context, r *agentpb.FetchRequest) (*agentpb.FetchReply, error) {
	img, err := imageName(r.GetImage())
	if err != nil {
		return nil, errInvalid{err}
	}
	from, err := peerFromPB(r.GetFrom())
	if err != nil || from == nil {
		return nil, invalid("fetch %s: from: %v", img, errors.Join(err, errors.New("the peer that offered it is required")))
	}
	res, err := s.local.Fetch(ctx, img, *from)
	if err != nil {
		return nil, err
	}
	return &agentpb.FetchReply{Did: res.Did, Bytes: res.Bytes, WireBytes: res.Wire, Files: int64(res.Files), TookNs: int64(res.Took)}, nil
}

// chunkSize is the payload of one Transfer message: large enough that the
// per-message cost is lost in the copy, well under gRPC's 4 MiB limit.
const chunkSize = 1 << 20

type chunkWriter struct {
	stream agentpb.Agent_TransferServer
}

func (w chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := p[:min(len(p), chunkSize)]
		if err := w.stream.Send(&agentpb.Chunk{Data: c}); err != nil {
			return n, err
		}
		n += len(c)
		p = p[len(c):]
	}
	return n, nil
}

func (s *Server) Transfer(r *agentpb.TransferRequest, stream agentpb.Agent_TransferServer) error {
	c := callerOf(stream.Context())
	if r.GetTicket() == "" {
		return invalid("transfer: ticket: required")
	}
	// Buffered so that small writes become one message each megabyte.
	bw := bufio.NewWriterSize(chunkWriter{stream}, chunkSize)
	if err := s.local.ServeOffer(stream.Context(), migrate.Ticket(r.GetTicket()), c.Name, bw); err != nil {
		return fmt.Errorf("transfer to %s: %w", c.Name, err)
	}
	return bw.Flush()
}
