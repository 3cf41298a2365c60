package agentapi

import (
	"context"
	"fmt"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Request deadlines: every unary request the plane sends carries the
// absolute wall-clock time after which the agent must not act on it, and
// the agent refuses one that arrives later. gRPC's own deadline travels as
// a relative timeout (grpc-timeout) that the server counts from the
// request's arrival, so a request a healed partition delivers minutes late
// would still be run in full; the stamp makes its deadline absolute. The
// plane, for its part, treats a call that went unanswered as one that may
// still land until its deadline plus the hosts' clock skew, and waits that
// out before it acts as if the call never happened (migrate's per-host
// fence). Both sides assume clocks that agree within that skew (NTP), as
// lease grants (migrate.Lease.NotAfter) already do.
//
// Streams are left alone: the event stream and image Transfer are
// long-lived by design, a Transfer is authorised by a ticket that expires
// on its own, and neither changes a container's placement or address.
//
// The refusal travels as codes.DeadlineExceeded with the REQUEST_EXPIRED
// reason, and the client maps it to migrate.ErrRequestExpired, which is
// NOT migrate.ErrUnreachable: the agent answered, and did nothing. A plain
// DeadlineExceeded (the call's context expired on the way or while the
// handler ran) stays ErrUnreachable: the step may have been done.

// DeadlineHeader is the metadata key of a request's absolute deadline, in
// RFC 3339 with nanoseconds (UTC).
const DeadlineHeader = "escape-request-deadline"

// DefaultRequestDeadline bounds a call whose context has no deadline, so
// that no request is ever unbounded.
const DefaultRequestDeadline = 2 * time.Minute

// DeadlineClientInterceptor stamps every unary request with its deadline:
// ctx's, or now+def (DefaultRequestDeadline if def <= 0) when ctx has none,
// in which case the call is bounded by it too.
func DeadlineClientInterceptor(def time.Duration) grpc.UnaryClientInterceptor {
	if def <= 0 {
		def = DefaultRequestDeadline
	}
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		dl, ok := ctx.Deadline()
		if !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, def)
			defer cancel()
			dl, _ = ctx.Deadline()
		}
		md, _ := metadata.FromOutgoingContext(ctx)
		md = md.Copy()
		md.Set(DeadlineHeader, dl.UTC().Format(time.RFC3339Nano))
		return invoker(metadata.NewOutgoingContext(ctx, md), method, req, reply, cc, opts...)
	}
}

// DeadlineServerInterceptor refuses a unary request that carries no
// deadline stamp (codes.InvalidArgument) or arrives after it
// (codes.DeadlineExceeded, reason REQUEST_EXPIRED: migrate.ErrRequestExpired
// on the client), before the handler sees it, and bounds the handler's
// context by the stamp. now is the agent's clock (nil: time.Now).
func DeadlineServerInterceptor(now func() time.Time) grpc.UnaryServerInterceptor {
	if now == nil {
		now = time.Now
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		dl, err := requestDeadline(ctx)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s: %v", info.FullMethod, err)
		}
		if t := now(); !t.Before(dl) {
			return nil, toStatus(fmt.Errorf("%s: arrived %v after its deadline %s: %w", info.FullMethod, t.Sub(dl),
				dl.Format(time.RFC3339Nano), migrate.ErrRequestExpired))
		}
		ctx, cancel := context.WithDeadline(ctx, dl)
		defer cancel()
		return handler(ctx, req)
	}
}

// requestDeadline reads a request's stamp.
func requestDeadline(ctx context.Context) (time.Time, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(DeadlineHeader)
	if len(v) != 1 {
		return time.Time{}, fmt.Errorf("want one %s header (a request deadline), got %d", DeadlineHeader, len(v))
	}
	dl, err := time.Parse(time.RFC3339Nano, v[0])
	if err != nil {
		return time.Time{}, fmt.Errorf("%s header %q: %w", DeadlineHeader, v[0], err)
	}
	return dl, nil
}
