package configs

import (
	"errors"
	"strings"
)

// FieldError is one broken rule: the file, the key path in it (as
// "guests[1].disks[0].legs[1]") and what is wrong.
type FieldError struct {
	File string
	Key  string
	// Env names the environment variable the value came from, if any.
	Env  string
	Rule string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		if e.Env != "" {
			b.WriteString(" (from $" + e.Env + ")")
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Rule)
	return b.String()
}

// Errors is every problem found in one file, in file order.
type Errors []*FieldError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// AsErrors returns the field errors inside err, if it holds any.
func AsErrors(err error) (Errors, bool) {
	var es Errors
	if errors.As(err, &es) {
		return es, true
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		return Errors{fe}, true
	}
	return nil, false
}
