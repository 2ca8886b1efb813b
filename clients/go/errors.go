package switchyard

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is every error the client returns: the gRPC status code the scheduler answered (or
// the client decided on before any call, such as InvalidArgument for a priority of 11) and
// its message.
//
// Test for a kind of failure with errors.Is and the sentinel of its code:
//
//	task, err := client.Get(ctx, id)
//	if errors.Is(err, switchyard.ErrNotFound) { ... }
//
// or read the code with errors.As:
//
//	var failure *switchyard.Error
//	if errors.As(err, &failure) && failure.Code == codes.FailedPrecondition { ... }
//
// status.Code(err) and status.FromError(err) from google.golang.org/grpc/status work too.
type Error struct {
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the scheduler's explanation (or the client's, for a request it refused).
	Message string
	// cause is the error this one was made from (a gRPC status error, a context error).
	cause error
}

// The sentinels errors.Is matches an *Error against, one per status code the scheduler uses.
// Each matches any *Error with its code (ErrInternal also matches Unknown and DataLoss).
var (
	// ErrInvalidArgument: the request itself is wrong (bad JSON, a priority out of range); fix it.
	ErrInvalidArgument = &Error{Code: codes.InvalidArgument}
	// ErrNotFound: no such task, queue or worker.
	ErrNotFound = &Error{Code: codes.NotFound}
	// ErrAlreadyExists: the thing being created exists already.
	ErrAlreadyExists = &Error{Code: codes.AlreadyExists}
	// ErrResourceExhausted: a size, rate or capacity limit was hit (payload too large, queue full).
	ErrResourceExhausted = &Error{Code: codes.ResourceExhausted}
	// ErrFailedPrecondition: not allowed in the current state (cancel a finished task, a task no
	// known worker could run).
	ErrFailedPrecondition = &Error{Code: codes.FailedPrecondition}
	// ErrAborted: a concurrent change won; retrying may succeed.
	ErrAborted = &Error{Code: codes.Aborted}
	// ErrOutOfRange: a value outside the range the scheduler accepts.
	ErrOutOfRange = &Error{Code: codes.OutOfRange}
	// ErrUnauthenticated: no token, or one the scheduler does not know.
	ErrUnauthenticated = &Error{Code: codes.Unauthenticated}
	// ErrPermissionDenied: the token's role may not do this.
	ErrPermissionDenied = &Error{Code: codes.PermissionDenied}
	// ErrUnavailable: no scheduler could be reached within the failover timeout.
	ErrUnavailable = &Error{Code: codes.Unavailable}
	// ErrDeadlineExceeded: the call (or the context's deadline) ran out of time.
	ErrDeadlineExceeded = &Error{Code: codes.DeadlineExceeded}
	// ErrCanceled: the context was cancelled.
	ErrCanceled = &Error{Code: codes.Canceled}
	// ErrUnimplemented: the scheduler is older than the client.
	ErrUnimplemented = &Error{Code: codes.Unimplemented}
	// ErrInternal: the scheduler failed internally (Internal, Unknown or DataLoss).
	ErrInternal = &Error{Code: codes.Internal}
)

// Error reads "NOT_FOUND: no task abc", the status name as the scheduler's other clients print it.
func (e *Error) Error() string {
	if e.Message == "" {
		return CodeName(e.Code)
	}
	return CodeName(e.Code) + ": " + e.Message
}

// Unwrap gives the error this one was made from, if any.
func (e *Error) Unwrap() error { return e.cause }

// Is reports whether target is the sentinel of e's code (see ErrNotFound and the others).
func (e *Error) Is(target error) bool {
	sentinel, ok := target.(*Error)
	if !ok || sentinel.Message != "" || sentinel.cause != nil {
		return false
	}
	if sentinel.Code == codes.Internal {
		return e.Code == codes.Internal || e.Code == codes.Unknown || e.Code == codes.DataLoss
	}
	return e.Code == sentinel.Code
}

// GRPCStatus lets status.Code and status.FromError read the code of an *Error.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// CodeName is the canonical upper-case name of a status code, "NOT_FOUND" for codes.NotFound
// (codes.Code.String gives "NotFound").
func CodeName(code codes.Code) string {
	switch code {
	case codes.OK:
		return "OK"
	case codes.Canceled:
		return "CANCELLED" // gRPC's own spelling; Go's constant drops an L
	}
	name := code.String()
	if strings.HasPrefix(name, "Code(") { // a number without a name
		return name
	}
	var upper strings.Builder
	for i, r := range name {
		if i > 0 && r >= 'A' && r <= 'Z' {
			upper.WriteByte('_')
		}
		upper.WriteRune(r)
	}
	return strings.ToUpper(upper.String())
}

// invalidArgument is the client's own refusal of a request it can check before any call.
func invalidArgument(format string, args ...any) *Error {
	return &Error{Code: codes.InvalidArgument, Message: fmt.Sprintf(format, args...)}
}

// fromError turns what a gRPC call or a context returned into an *Error (nil stays nil).
func fromError(err error) *Error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return already
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		converted := status.FromContextError(err)
		return &Error{Code: converted.Code(), Message: err.Error(), cause: err}
	}
	if converted, ok := status.FromError(err); ok {
		message := converted.Message()
		if message == "" {
			message = CodeName(converted.Code())
		}
		return &Error{Code: converted.Code(), Message: message, cause: err}
	}
	return &Error{Code: codes.Unknown, Message: err.Error(), cause: err}
}
