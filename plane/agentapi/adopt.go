package agentapi

// Adoption: the plane asks each agent which of its host's containers are
// labelled for protection (migrate/node/adopt.go).

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/plane/agentapi/agentpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Adopter is a host's agent that can list the containers it adopts.
type Adopter interface {
	Adoptable(ctx context.Context) ([]migrate.Spec, error)
}

func (s *Server) Adoptable(ctx context.Context, _ *agentpb.AdoptableRequest) (*agentpb.AdoptableReply, error) {
	a, ok := s.local.(Adopter)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "adoptable: this agent adopts no containers")
	}
	found, err := a.Adoptable(ctx)
	if err != nil {
		return nil, err
	}
	if len(found) > migrate.MaxAdoptable {
		return nil, fmt.Errorf("adoptable: %d containers, more than %d", len(found), migrate.MaxAdoptable)
	}
	out := &agentpb.AdoptableReply{}
	for _, sp := range found {
		out.Containers = append(out.Containers, specToPB(sp))
	}
	return out, nil
}

// Adoptable lists the host's containers labelled for adoption. Each is as
// the agent found it: one the agent refuses (an id that is not valid here,
// say) is listed with the reasons, for the plane to audit.
func (c *Client) Adoptable(ctx context.Context) ([]migrate.Spec, error) {
	r, err := c.api.Adoptable(ctx, &agentpb.AdoptableRequest{})
	if err != nil {
		return nil, c.err("adoptable", err)
	}
	if n := len(r.GetContainers()); n > migrate.MaxAdoptable {
		return nil, fmt.Errorf("adoptable on %s: %d containers, more than %d", c.name, n, migrate.MaxAdoptable)
	}
	out := make([]migrate.Spec, 0, len(r.GetContainers()))
	for _, p := range r.GetContainers() {
		sp, err := adoptableFromPB(p)
		if err != nil {
			return nil, fmt.Errorf("adoptable on %s: %w", c.name, err)
		}
		out = append(out, sp)
	}
	return out, nil
}

// adoptableFromPB decodes one listed container: bounded, but not
// validated as a spec to act on (the plane does that, and audits what it
// refuses).
func adoptableFromPB(p *agentpb.Spec) (migrate.Spec, error) {
	if p.GetAdopted() == nil {
		return migrate.Spec{}, fmt.Errorf("container %.80q: not an adopted one", p.GetId())
	}
	if len(p.GetId()) > 128 || len(p.GetAdopted().GetOciSpec()) > migrate.MaxAdoptedSpec {
		return migrate.Spec{}, fmt.Errorf("container %.80q: id or OCI spec beyond their bounds", p.GetId())
	}
	s := migrate.Spec{ID: p.GetId(), Image: p.GetImage(), Args: p.GetArgs(), Env: p.GetEnv(), MAC: p.GetMac(),
		Labels: p.GetLabels(), Adopted: adoptedFromPB(p.GetAdopted())}
	if p.GetIp() != "" {
		ip, err := netip.ParsePrefix(p.GetIp())
		if err != nil {
			return migrate.Spec{}, fmt.Errorf("container %s: ip %q: %w", s.ID, p.GetIp(), err)
		}
		s.IP = ip
	}
	return s, nil
}
