package ops

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/ledger"
)

// execution is one plan being carried out: what it changed so far, and
// each guest's record as its claim wrote it (the epoch its fences and
// start carry).
type execution struct {
	o       *Operator
	say     func(step, msg string)
	records map[string]ledger.Record
	left    []string
	// halted are the guests this plan recorded stopped (a move stops the
	// guest before it claims it).
	halted map[string]bool
}

// execute performs p's steps in order and stops at the first failure,
// saying what was changed and what was not.
func (o *Operator) execute(ctx context.Context, p Plan, say func(step, msg string)) error {
	x := &execution{o: o, say: say, records: map[string]ledger.Record{}, halted: map[string]bool{}}
	for i, s := range p.Steps {
		if err := ctx.Err(); err != nil {
			return x.failed(p.Steps[i:], s, fmt.Errorf("the operation was cancelled before %s: %w", stepName(s), err))
		}
		if err := x.step(ctx, s); err != nil {
			return x.failed(p.Steps[i:], s, err)
		}
	}
	return nil
}

func (x *execution) step(ctx context.Context, s Step) error {
	o, env := x.o, x.o.env
	switch s.Kind {
	case StepFork:
		x.say("fork", "forking the ledger to "+s.Node+" alone (etcd --force-new-cluster): the other members are out until they rejoin")
		if err := env.ForceNewCluster(ctx); err != nil {
			return fmt.Errorf("fork the ledger to %s: %w", s.Node, err)
		}
		x.done("fork", "the ledger is forked to "+s.Node+" alone; the other nodes rejoin when they come back")

	case StepCreate:
		r, err := env.Ledger().Update(ctx, s.Guest, func(r *ledger.Record) error {
			if !r.Updated.IsZero() || r.Epoch != 0 {
				return fmt.Errorf("%s: %w: it is in the ledger now (%s)", s.Guest, errChanged, describe(*r))
			}
			return ledger.SetDesired(r, ledger.DesiredStopped, env.Self(), s.Why, o.now())
		})
		if err != nil {
			return fmt.Errorf("record %s in the ledger: %w", s.Guest, err)
		}
		x.records[s.Guest] = r
		x.done("ledger", s.Guest+" recorded, stopped, no owner yet")

	case StepClaim:
		var was ledger.Record
		r, err := env.Ledger().Update(ctx, s.Guest, func(r *ledger.Record) error {
			if r.Epoch != s.Epoch || r.Owner != s.Owner {
				return fmt.Errorf("%s %w: the ledger says %s, the plan read owner %s at epoch %d", s.Guest, errChanged, describe(*r), orDefault(s.Owner, "none"), s.Epoch)
			}
			was = *r
			if err := ledger.Claim(r, s.Node, env.Self(), s.Why, s.Stale, o.now()); err != nil {
				return err
			}
			// Claim wants the guest running; a stopped guest that
			// changes owner stays stopped.
			r.Desired = s.Desired
			return nil
		})
		if err != nil {
			return fmt.Errorf("claim %s for %s: %w", s.Guest, s.Node, err)
		}
		x.records[s.Guest] = r
		msg := fmt.Sprintf("%s: epoch %d → %d, owner %s", s.Guest, was.Epoch, r.Epoch, r.Owner)
		if was.Owner != "" && was.Owner != r.Owner {
			msg += " (was " + was.Owner + ")"
		}
		if len(s.Stale) > 0 {
			msg += fmt.Sprintf("; %s's legs stale at epoch %d", andList(s.Stale), r.Epoch)
		}
		x.done("ledger", msg)

	case StepDesired:
		r, err := env.Ledger().Update(ctx, s.Guest, func(r *ledger.Record) error {
			if r.Epoch != s.Epoch || r.Owner != s.Owner {
				return fmt.Errorf("%s %w: the ledger says %s, the plan read owner %s at epoch %d", s.Guest, errChanged, describe(*r), orDefault(s.Owner, "none"), s.Epoch)
			}
			return ledger.SetDesired(r, s.Desired, env.Self(), s.Why, o.now())
		})
		if err != nil {
			return fmt.Errorf("record %s %s: %w", s.Guest, s.Desired, err)
		}
		x.records[s.Guest] = r
		x.halted[s.Guest] = s.Desired == ledger.DesiredStopped
		x.done("ledger", fmt.Sprintf("%s: desired %s", s.Guest, s.Desired))

	case StepFence:
		r, ok := x.records[s.Guest]
		if !ok {
			return fmt.Errorf("fence %s on %s: no claim before it (a bug in the plan)", s.Guest, s.Node)
		}
		err := x.call(ctx, o.callTimeout, func(ctx context.Context) error {
			return env.Client(s.Node).Fence(ctx, api.FenceRequest{Guest: s.Guest, Owner: r.Owner, Epoch: r.Epoch})
		})
		if err != nil {
			return fmt.Errorf("fence %s's legs on %s: %w", s.Guest, s.Node, err)
		}
		x.done("fence "+s.Node, fmt.Sprintf("%s's targetd serves %s's legs only to %s at epoch %d", s.Node, s.Guest, r.Owner, r.Epoch))

	case StepStop:
		x.say("stop "+s.Node, fmt.Sprintf("stopping %s (ACPI power button, destroyed after %s)", s.Guest, s.Timeout))
		err := x.call(ctx, o.callTimeout+s.Timeout, func(ctx context.Context) error {
			return env.Client(s.Node).Stop(ctx, s.Guest, api.StopRequest{Timeout: s.Timeout})
		})
		if err != nil {
			return fmt.Errorf("stop %s on %s: %w", s.Guest, s.Node, err)
		}
		x.done("stop "+s.Node, s.Guest+" stopped on "+s.Node)

	case StepDestroy:
		err := x.call(ctx, o.callTimeout, func(ctx context.Context) error {
			return env.Client(s.Node).Destroy(ctx, s.Guest)
		})
		if err != nil {
			return fmt.Errorf("destroy %s on %s: %w", s.Guest, s.Node, err)
		}
		x.done("destroy "+s.Node, s.Guest+" destroyed on "+s.Node)

	case StepStart:
		r, ok := x.records[s.Guest]
		if !ok {
			return fmt.Errorf("start %s on %s: no claim before it (a bug in the plan)", s.Guest, s.Node)
		}
		stale := sortedKeys(r.Stale)
		msg := fmt.Sprintf("starting %s at epoch %d", s.Guest, r.Epoch)
		if len(stale) > 0 {
			msg += fmt.Sprintf(" (stale legs, resynced in full: %s)", andList(stale))
		}
		x.say("start "+s.Node, msg)
		err := x.call(ctx, o.startTimeout, func(ctx context.Context) error {
			return env.Client(s.Node).Start(ctx, s.Guest, api.StartRequest{Epoch: r.Epoch, Stale: stale})
		})
		if err != nil {
			return fmt.Errorf("start %s on %s: %w", s.Guest, s.Node, err)
		}
		x.done("start "+s.Node, s.Guest+" runs on "+s.Node)

	default:
		return fmt.Errorf("unknown step %q (a bug in the plan)", s.Kind)
	}
	return nil
}

// call runs one request to a node within its own deadline, so a node
// that hangs costs the operation that long and no more.
func (x *execution) call(ctx context.Context, d time.Duration, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return fn(ctx)
}

// done says a step's result and remembers it as changed.
func (x *execution) done(step, msg string) {
	x.say(step, msg)
	x.o.log.Info("operation step", "step", step, "result", msg)
	x.left = append(x.left, msg)
}

// failed is the operation's error when step s failed with err and rest
// (s included) was not done.
func (x *execution) failed(rest []Step, s Step, err error) error {
	e := &Error{Reason: err.Error(), Left: slices.Clone(x.left), Err: err}
	for _, r := range rest {
		e.NotDone = append(e.NotDone, stepName(r))
	}
	if len(x.left) == 0 {
		e.Left = []string{"nothing was changed"}
		if errors.Is(err, errChanged) || errors.Is(err, ledger.ErrConflict) {
			e.Refused = true
			e.Hint = "look again (mhcodi status) and run again if it still makes sense"
			return e
		}
	}
	e.Hint = x.hint(rest, s, err)
	return e
}

// hint says how to finish after a failure midway.
func (x *execution) hint(rest []Step, s Step, err error) string {
	r, claimed := x.records[s.Guest]
	willStart, movingTo := "", ""
	for _, st := range rest {
		switch {
		case st.Kind == StepStart && st.Guest == s.Guest:
			willStart = st.Node
		case st.Kind == StepClaim && st.Guest == s.Guest:
			movingTo = st.Node
		}
	}
	// A move that stopped the guest before claiming it: say how to
	// finish it or undo it with a start.
	halted := x.halted[s.Guest] && movingTo != "" && willStart != "" // the claim is still to come
	switch {
	case halted && s.Kind == StepStop:
		return fmt.Sprintf("the ledger records %s stopped (owner unchanged), but it may still run on %s: see mhcodi-fenced's log there, mhcodi guest stop %s tries again (mhcodi guest destroy %s pulls the plug); then mhcodi guest start %s --to %s finishes the move, or mhcodi guest start %s starts it where it was",
			s.Guest, s.Node, s.Guest, s.Guest, s.Guest, movingTo, s.Guest)
	case halted:
		return fmt.Sprintf("%s is stopped and recorded stopped, its owner unchanged: once the cause is fixed, mhcodi guest start %s --to %s finishes the move, or mhcodi guest start %s starts it where it was",
			s.Guest, s.Guest, movingTo, s.Guest)
	case s.Kind == StepFork:
		return "the ledger is as it was; see mhcodi-fenced's log on " + s.Node
	case s.Kind == StepClaim && errors.Is(err, ledger.ErrNoQuorum):
		return "the ledger lost its quorum meanwhile: mhcodi status shows which nodes answer"
	case s.Kind == StepClaim || s.Kind == StepCreate || s.Kind == StepDesired:
		return "fix the cause and run the same command again"
	case s.Kind == StepFence && claimed && willStart != "":
		return fmt.Sprintf("the ledger names %s owner at epoch %d already: once %s's fenced answers, mhcodi guest start %s --to %s fences again and starts it; if %s is down, mhcodi guest failover %s --to %s --force marks its legs stale",
			r.Owner, r.Epoch, s.Node, s.Guest, willStart, s.Node, s.Guest, willStart)
	case s.Kind == StepFence && claimed:
		return fmt.Sprintf("the ledger names %s owner at epoch %d already: run the same command again once %s's fenced answers", r.Owner, r.Epoch, s.Node)
	case s.Kind == StepStop && claimed && willStart != "":
		return fmt.Sprintf("%s may still run on %s, but its legs are fenced to %s: its fenced destroys it when it sees the new epoch (or mhcodi guest destroy %s); then mhcodi guest start %s --to %s",
			s.Guest, s.Node, r.Owner, s.Guest, s.Guest, willStart)
	case s.Kind == StepStart && claimed:
		return fmt.Sprintf("%s is owned by %s at epoch %d with its legs fenced, but not running: see mhcodi-fenced's log on %s, then mhcodi guest start %s --to %s",
			s.Guest, r.Owner, r.Epoch, s.Node, s.Guest, s.Node)
	case s.Kind == StepStop || s.Kind == StepDestroy:
		return fmt.Sprintf("see mhcodi-fenced's log on %s; mhcodi guest destroy %s pulls the plug", s.Node, s.Guest)
	}
	return "fix the cause and run the same command again; mhcodi status shows where things stand"
}

// stepName says what a step would have done.
func stepName(s Step) string {
	switch s.Kind {
	case StepFork:
		return "fork the ledger to " + s.Node
	case StepCreate:
		return "record " + s.Guest + " in the ledger"
	case StepClaim:
		return fmt.Sprintf("claim %s for %s", s.Guest, s.Node)
	case StepDesired:
		return fmt.Sprintf("record %s %s", s.Guest, s.Desired)
	case StepFence:
		return fmt.Sprintf("fence %s's legs on %s", s.Guest, s.Node)
	case StepStop:
		return fmt.Sprintf("stop %s on %s", s.Guest, s.Node)
	case StepDestroy:
		return fmt.Sprintf("destroy %s on %s", s.Guest, s.Node)
	case StepStart:
		return fmt.Sprintf("start %s on %s", s.Guest, s.Node)
	}
	return string(s.Kind)
}
