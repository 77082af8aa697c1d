package ops

import (
	"errors"
	"strings"
)

// Error is why an operation was refused or failed. Refused means nothing
// was changed; otherwise Left lists, one sentence each, what the
// operation changed before it stopped (the cluster is not as it was), so
// the sysadmin never has to guess.
type Error struct {
	Refused bool
	// Reason says what was wrong, in a sentence.
	Reason string
	// Left lists what was changed before the failure.
	Left []string
	// NotDone lists what the operation did not get to.
	NotDone []string
	// Hint says what would make the operation allowed, or how to finish.
	Hint string
	// Err is the underlying error, if any.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Reason)
	if len(e.Left) > 0 {
		b.WriteString("\n  done and left so: " + strings.Join(e.Left, "; "))
	}
	if len(e.NotDone) > 0 {
		b.WriteString("\n  not done: " + strings.Join(e.NotDone, "; "))
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// refuse is a refusal: nothing was changed.
func refuse(hint, reason string) *Error {
	return &Error{Refused: true, Reason: reason, Hint: hint}
}

// HintOf is the hint of an *Error in err's chain, "" otherwise.
func HintOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Hint
	}
	return ""
}

// IsRefusal reports whether err is a refusal (nothing was changed).
func IsRefusal(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Refused
}
