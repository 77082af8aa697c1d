package login

import (
	"fmt"

	"github.com/mhcodi/mhcodi/iscsi/text"
)

// Error is a failed login: the status sent to the initiator and the reason,
// for the target's log. The connection must be closed once the response
// carrying Status is sent.
type Error struct {
	Status text.Status
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("iscsi login rejected with status %s: %v", e.Status, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// loginError builds an *Error with a formatted reason; %w in format wraps.
func loginError(s text.Status, format string, args ...any) *Error {
	return &Error{Status: s, Err: fmt.Errorf(format, args...)}
}

// RejectResponse is a Login Response refusing the login with status s, for
// the engine's own refusals (unknown TSIH, too many sessions...) made
// without a Login. The engine closes the connection after sending it.
func RejectResponse(s text.Status) Response {
	return Response{StatusClass: s.Class(), StatusDetail: s.Detail()}
}
