package agentapi

import (
	"context"
	"errors"
	"fmt"

	"github.com/escape-mtd/escape/migrate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errorDomain qualifies the reasons of this API's errors (AIP-193).
const errorDomain = "agent.escape.mtd"

// sentinels are the errors whose identity crosses the wire: a caller
// branches on them (errors.Is) whichever side of the link they came from.
var sentinels = []struct {
	err    error
	code   codes.Code
	reason string
}{
	{migrate.ErrStaleGeneration, codes.FailedPrecondition, "STALE_GENERATION"},
	{migrate.ErrLeaseExpired, codes.FailedPrecondition, "LEASE_EXPIRED"},
	{migrate.ErrAddressTaken, codes.AlreadyExists, "ADDRESS_TAKEN"},
	{migrate.ErrIncompleteImage, codes.DataLoss, "INCOMPLETE_IMAGE"},
	{migrate.ErrTicket, codes.PermissionDenied, "INVALID_TICKET"},
	// A request refused for arriving after its stamped deadline
	// (deadline.go): an answer, and nothing done. Without the reason, a
	// DeadlineExceeded stays ErrUnreachable below.
	{migrate.ErrRequestExpired, codes.DeadlineExceeded, "REQUEST_EXPIRED"},
	// Pod actions (pods.go).
	{migrate.ErrPodOwned, codes.FailedPrecondition, "POD_OWNED"},
	{migrate.ErrPodNotFound, codes.NotFound, "POD_NOT_FOUND"},
	{migrate.ErrPodForbidden, codes.PermissionDenied, "POD_FORBIDDEN"},
	{migrate.ErrBadCheckpoint, codes.DataLoss, "BAD_CHECKPOINT"},
}

// errInvalid marks an error in the request itself.
type errInvalid struct{ err error }

func (e errInvalid) Error() string { return e.err.Error() }
func (e errInvalid) Unwrap() error { return e.err }

func invalid(format string, a ...any) error { return errInvalid{fmt.Errorf(format, a...)} }

// toStatus turns a step's error into a gRPC status that keeps its message
// and, for a sentinel, its identity.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if se, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return se.GRPCStatus().Err() // already a status, not wrapped
	}
	var inv errInvalid
	if errors.As(err, &inv) {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			st := status.New(s.code, err.Error())
			if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: s.reason, Domain: errorDomain}); derr == nil {
				st = d
			}
			return st.Err()
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// fromStatus turns a call's error back into what the agent meant: a
// sentinel keeps its identity, and a host the call never reached is
// migrate.ErrUnreachable.
func fromStatus(host, call string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s on %s: %w", call, host, err)
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != errorDomain {
			continue
		}
		for _, s := range sentinels {
			if s.reason == info.GetReason() {
				return &remoteError{host: host, call: call, msg: st.Message(), is: s.err}
			}
		}
	}
	switch st.Code() {
	case codes.Unavailable:
		return &remoteError{host: host, call: call, msg: st.Message(), is: migrate.ErrUnreachable}
	case codes.DeadlineExceeded:
		// The agent may have done the step after all: the caller must
		// treat it as unknown, as for any unreachable host.
		return &remoteError{host: host, call: call, msg: "no answer in time: " + st.Message(), is: migrate.ErrUnreachable, also: context.DeadlineExceeded}
	case codes.Canceled:
		return &remoteError{host: host, call: call, msg: st.Message(), is: context.Canceled}
	}
	return &remoteError{host: host, call: call, msg: fmt.Sprintf("%s (%s)", st.Message(), st.Code())}
}

// remoteError is a step's error as the agent reported it.
type remoteError struct {
	host, call, msg string
	is, also        error
}

func (e *remoteError) Error() string { return fmt.Sprintf("%s on %s: %s", e.call, e.host, e.msg) }

func (e *remoteError) Is(target error) bool {
	return (e.is != nil && target == e.is) || (e.also != nil && target == e.also)
}
