package ledger

import (
	"errors"
	"fmt"
	"time"

	"github.com/mhcodi/mhcodi/naming"
)

// ErrInvalid wraps every refusal of Validate and of the transitions: a
// name that is not a label, an unknown desired state. It is a programming
// or operator error, never a race, so retrying does not help.
var ErrInvalid = errors.New("ledger: invalid record")

// Claim makes owner the guest's runner: the epoch grows by one (the new
// fencing token), the guest is wanted running, and every node in stale
// has its leg marked stale at the new epoch. Marks of other nodes are
// kept: a leg stale since an earlier epoch is still stale. A node already
// marked gets the new epoch, because it also missed the writes of the
// runner it was unreachable from now, so only a resync done at the new
// epoch or later may clear it.
//
// r is changed only when Claim returns nil.
func Claim(r *Record, owner, by, why string, stale []string, now time.Time) error {
	if err := errors.Join(label("guest", r.Guest), label("owner", owner), label("by", by)); err != nil {
		return err
	}
	for _, n := range stale {
		if err := label("stale leg node", n); err != nil {
			return err
		}
	}
	r.Epoch++
	r.Owner = owner
	r.Desired = DesiredRunning
	if len(stale) > 0 && r.Stale == nil {
		r.Stale = make(map[string]uint64, len(stale))
	}
	for _, n := range stale {
		r.Stale[n] = r.Epoch
	}
	stamp(r, by, why, now)
	return nil
}

// SetDesired records whether the guest is wanted running or stopped. It
// changes neither owner nor epoch: stopping a guest does not fence it, and
// starting it again where it last ran needs no new token.
func SetDesired(r *Record, desired, by, why string, now time.Time) error {
	if err := errors.Join(label("guest", r.Guest), label("by", by), validDesired(desired)); err != nil {
		return err
	}
	r.Desired = desired
	stamp(r, by, why, now)
	return nil
}

// ClearStale removes node's stale mark if it was made at an epoch no
// later than upTo, the epoch under which the leg was resynced: a mark made
// after the resync began (a newer claim while the leg was unreachable
// again) must survive it. It reports whether a mark was removed.
func ClearStale(r *Record, node string, upTo uint64) bool {
	e, ok := r.Stale[node]
	if !ok || e > upTo {
		return false
	}
	delete(r.Stale, node)
	if len(r.Stale) == 0 {
		// omitempty then leaves it out of the JSON, as before any mark.
		r.Stale = nil
	}
	return true
}

// Validate checks a record as it is about to be written: the guest and
// the node names are labels, the desired state is one of the two. An
// unowned record (Owner "") is valid: a guest created but never started.
func Validate(r Record) error {
	errs := []error{label("guest", r.Guest), validDesired(r.Desired)}
	if r.Owner != "" {
		errs = append(errs, label("owner", r.Owner))
	}
	if r.By != "" {
		errs = append(errs, label("by", r.By))
	}
	for n := range r.Stale {
		errs = append(errs, label("stale leg node", n))
	}
	return errors.Join(errs...)
}

// label checks one name of a record; what says which.
func label(what, name string) error {
	if err := naming.ValidLabel(name); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalid, what, err)
	}
	return nil
}

func validDesired(d string) error {
	if d != DesiredRunning && d != DesiredStopped {
		return fmt.Errorf("%w: desired state %q is neither %q nor %q", ErrInvalid, d, DesiredRunning, DesiredStopped)
	}
	return nil
}

func stamp(r *Record, by, why string, now time.Time) {
	r.By = by
	r.Why = why
	r.Updated = now.UTC()
}
