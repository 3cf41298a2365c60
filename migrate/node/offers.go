package node

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/escape-mtd/escape/migrate"
)

// Transfers between hosts. A host that has something another needs (a
// checkpoint image without shared storage, a container image without a
// registry) offers it to that host by name; the plane hands the ticket to
// the other host's Fetch or EnsureImage, whose agent opens a stream from
// this one (Peers, the gRPC layer) and this one's ServeOffer writes what
// the ticket offers into it.

// Peers opens streams from other hosts' agents (the gRPC layer provides it).
type Peers interface {
	// Open returns the bytes that peer.Name's agent writes for peer.Ticket
	// (its Node.ServeOffer).
	Open(ctx context.Context, peer migrate.Peer) (io.ReadCloser, error)
}

const (
	// offerLife is how long a ticket can be used. It may be used again
	// until then, by its peer only, so that a failed transfer is
	// restarted cleanly.
	offerLife = 10 * time.Minute
	// maxOffers bounds the outstanding tickets.
	maxOffers = 1024
)

// Errors of ServeOffer.
var (
	ErrUnknownTicket = fmt.Errorf("%w: unknown ticket", migrate.ErrTicket)
	ErrTicketExpired = fmt.Errorf("%w: ticket expired", migrate.ErrTicket)
	ErrWrongPeer     = fmt.Errorf("%w: ticket offered to another host", migrate.ErrTicket)
)

type offer struct {
	migrate.Offer
	expires time.Time
}

type offers struct {
	mu sync.Mutex
	m  map[migrate.Ticket]offer
}

// Offer lets the host what.To fetch what (a checkpoint image or a
// container image this host has) for the next ten minutes.
func (n *Node) Offer(ctx context.Context, what migrate.Offer) (migrate.Ticket, error) {
	if err := n.checkOffer(ctx, what); err != nil {
		return "", n.fail("offer", "", err)
	}
	now := n.now()
	n.offers.mu.Lock()
	defer n.offers.mu.Unlock()
	if n.offers.m == nil {
		n.offers.m = map[migrate.Ticket]offer{}
	}
	if len(n.offers.m) >= maxOffers {
		for t, o := range n.offers.m {
			if !now.Before(o.expires) {
				delete(n.offers.m, t)
			}
		}
		if len(n.offers.m) >= maxOffers {
			return "", n.fail("offer", "", fmt.Errorf("%d offers outstanding", len(n.offers.m)))
		}
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", n.fail("offer", "", err)
	}
	t := migrate.Ticket(hex.EncodeToString(b[:]))
	n.offers.m[t] = offer{Offer: what, expires: now.Add(offerLife)}
	return t, nil
}

// checkOffer refuses an offer of something this host does not have.
func (n *Node) checkOffer(ctx context.Context, what migrate.Offer) error {
	if !hostNameRE.MatchString(what.To) {
		return fmt.Errorf("offer to %q: want a host name", what.To)
	}
	if what.To == n.cfg.Name {
		return fmt.Errorf("offer to %s: this host itself", what.To)
	}
	switch what.Kind {
	case migrate.OfferCheckpoint:
		dir, err := n.imagePath(migrate.ImageName(what.Name))
		if err != nil {
			return err
		}
		_, err = verifyDir(dir)
		return err
	case migrate.OfferImage:
		if err := migrate.ValidImageRef(what.Name); err != nil {
			return err
		}
		c, ctx, err := n.conn(ctx)
		if err != nil {
			return err
		}
		_, err = image(ctx, c, what.Name)
		return err
	default:
		return fmt.Errorf("offer of kind %q: want %s or %s", what.Kind, migrate.OfferCheckpoint, migrate.OfferImage)
	}
}

// lookupOffer returns what ticket offers to requester.
func (n *Node) lookupOffer(ticket migrate.Ticket, requester string) (migrate.Offer, error) {
	now := n.now()
	n.offers.mu.Lock()
	defer n.offers.mu.Unlock()
	o, ok := n.offers.m[ticket]
	if !ok {
		return migrate.Offer{}, ErrUnknownTicket
	}
	if !now.Before(o.expires) {
		delete(n.offers.m, ticket)
		return migrate.Offer{}, ErrTicketExpired
	}
	if subtle.ConstantTimeCompare([]byte(o.To), []byte(requester)) != 1 {
		return migrate.Offer{}, fmt.Errorf("%w (asked by %q)", ErrWrongPeer, requester)
	}
	return o.Offer, nil
}

// ServeOffer writes what ticket offers to w, if requester (the host the
// caller's certificate names) is the host it was offered to: a checkpoint
// image as a bundle, a container image as an OCI archive.
func (n *Node) ServeOffer(ctx context.Context, ticket migrate.Ticket, requester string, w io.Writer) error {
	o, err := n.lookupOffer(ticket, requester)
	if err != nil {
		return n.fail("serve offer", "", err)
	}
	switch o.Kind {
	case migrate.OfferCheckpoint:
		err = n.serveCheckpoint(ctx, migrate.ImageName(o.Name), w)
	default:
		err = n.serveImage(ctx, o.Name, w)
	}
	if err != nil {
		return n.fail("serve offer", "", fmt.Errorf("%s %s to %s: %w", o.Kind, o.Name, requester, err))
	}
	return nil
}
