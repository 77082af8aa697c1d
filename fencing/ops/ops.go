// Package ops carries out what the sysadmin asks (start, stop, fail over,
// evacuate, declare dead…) and what fenced does by itself (automatic
// failover after a lease expired): each operation is planned from the
// ledger, the nodes' answers and the cluster file by pure functions, then
// executed step by step with progress, and refused with a reason and a
// hint when it is not safe.
package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/ledger"
)

// Env is what an operation runs against; mhcodi-fenced implements it.
type Env interface {
	Config() *configs.Config
	// Self is the node the operation runs on.
	Self() string
	// Ledger is this node's view of the ledger.
	Ledger() ledger.Store
	// Client reaches node's fenced (Self included).
	Client(node string) api.Client
	// ForceNewCluster forks the ledger to this node alone (etcd
	// --force-new-cluster): the operator's word that every other node is
	// down. Only a forced failover calls it.
	ForceNewCluster(ctx context.Context) error
}

// Operator runs operations on one node, one at a time: two operations
// of the same node would plan from the same view and race each other;
// operations of different nodes are kept apart by the ledger's
// transactions.
type Operator struct {
	env  Env
	log  *slog.Logger
	now  func() time.Time
	busy chan struct{}
	// callTimeout bounds each call to a node (fence, destroy); a stop
	// gets the guest's stop timeout on top, a start startTimeout.
	callTimeout  time.Duration
	startTimeout time.Duration
	// autoNodeTimeout bounds each node's answer to an automatic
	// failover's Gather (AutoFailoverNodeTimeout).
	autoNodeTimeout time.Duration
}

// AutoFailoverNodeTimeout is how long an automatic failover waits for
// each node's status. Its owner's lease expired, so the owner is most
// likely cut off and never answers: waiting NodeTimeout (or the dial's
// second) for it only delays the start. Safety does not rest on the
// answer: the owner destroyed its copy lease_margin before the lease
// could expire, and the claim's transaction still refuses a held lease.
// A node that answers later than this is taken as down: its legs are
// marked stale (resynced in full), which costs a resync, not a split.
const AutoFailoverNodeTimeout = 500 * time.Millisecond

// WithAutoFailoverNodeTimeout changes AutoFailoverNodeTimeout.
func WithAutoFailoverNodeTimeout(d time.Duration) Option {
	return func(o *Operator) { o.autoNodeTimeout = d }
}

// Option changes an Operator.
type Option func(*Operator)

// WithLogger sends the Operator's log to l (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *Operator) { o.log = l } }

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(o *Operator) { o.now = now } }

// WithTimeouts sets how long a call to a node may take, and a start.
func WithTimeouts(call, start time.Duration) Option {
	return func(o *Operator) { o.callTimeout, o.startTimeout = call, start }
}

// New returns an Operator working through env.
func New(env Env, opts ...Option) *Operator {
	o := &Operator{env: env, log: slog.Default(), now: time.Now, busy: make(chan struct{}, 1),
		callTimeout: 15 * time.Second, startTimeout: 2 * time.Minute, autoNodeTimeout: AutoFailoverNodeTimeout}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// Run carries out r: it gathers the cluster's view, plans, and executes
// the plan. progress (may be nil) gets every line as it happens, the
// last one with Done set and, when Run returns an error, its Err and
// Hint, so a server streams the lines and adds nothing. The error is an
// *Error whenever the operation was refused or failed midway.
func (o *Operator) Run(ctx context.Context, r api.OpRequest, progress func(api.Progress)) error {
	return o.run(ctx, progress, func(f Facts) (Plan, error) { return PlanOp(f, r) }, r.Op, NodeTimeout)
}

// AutoFailover fails guest over to this node after its owner's lease
// expired (quorum mode with fencing.auto_failover only). It checks again,
// under the ledger, that nobody holds the lease and that this node holds
// the guest's legs; the claim's transaction refuses if another node
// claimed it meanwhile.
// Its progress lines go to the log.
func (o *Operator) AutoFailover(ctx context.Context, guest string) error {
	progress := func(p api.Progress) {
		if !p.Done {
			o.log.Info("automatic failover", "guest", guest, "step", p.Step, "msg", p.Message)
		}
	}
	return o.run(ctx, progress, func(f Facts) (Plan, error) {
		p, err := PlanAutoFailover(f, guest)
		p.Op = "auto-failover"
		return p, err
	}, "auto-failover", o.autoNodeTimeout)
}

func (o *Operator) run(ctx context.Context, progress func(api.Progress), plan func(Facts) (Plan, error), op string, nodeTimeout time.Duration) error {
	if progress == nil {
		progress = func(api.Progress) {}
	}
	say := func(step, msg string) {
		progress(api.Progress{Time: o.now(), Step: step, Message: msg})
	}
	finish := func(done string, err error) error {
		last := api.Progress{Time: o.now(), Step: "done", Message: done, Done: true}
		if err != nil {
			last.Step, last.Message, last.Err, last.Hint = "failed", "", err.Error(), HintOf(err)
			if IsRefusal(err) {
				last.Step = "refused"
			}
			o.log.Warn("operation not done", "op", op, "err", err)
		} else {
			o.log.Info("operation done", "op", op, "result", done)
		}
		progress(last)
		return err
	}

	select {
	case o.busy <- struct{}{}:
		defer func() { <-o.busy }()
	default:
		say("wait", "another operation runs on "+o.env.Self()+"; waiting for it to end")
		select {
		case o.busy <- struct{}{}:
			defer func() { <-o.busy }()
		case <-ctx.Done():
			return finish("", &Error{Refused: true, Reason: "gave up waiting for the operation already running on " + o.env.Self(), Err: ctx.Err(),
				Hint: "run again when it has ended"})
		}
	}

	view, err := GatherWithin(ctx, o.env, nodeTimeout)
	if err != nil {
		return finish("", &Error{Refused: true, Reason: "the cluster could not be asked: " + err.Error(), Err: err})
	}
	say("check", summarizeView(view))
	f := NewFacts(o.env.Config(), o.env.Self(), view)
	p, err := plan(f)
	if err != nil {
		return finish("", err)
	}
	for _, n := range p.Notes {
		say("note", n)
	}
	o.log.Info("operation planned", "op", op, "steps", len(p.Steps))
	if err := o.execute(ctx, p, say); err != nil {
		return finish("", err)
	}
	return finish(p.Done, nil)
}

// summarizeView is the first progress line: who answered, and the ledger.
func summarizeView(v api.ClusterView) string {
	var up, down []string
	for _, n := range v.Nodes {
		if n.Up {
			up = append(up, n.Node)
		} else {
			down = append(down, n.Node)
		}
	}
	s := fmt.Sprintf("%s up", andList(up))
	if len(down) > 0 {
		s += fmt.Sprintf(", %s down", andList(down))
	}
	if v.Quorum {
		return s + "; the ledger has quorum"
	}
	return s + "; the ledger has no quorum (" + orDefault(v.LedgerErr, "no reason given") + ")"
}

// errChanged is a claim's refusal when the record is not what the plan
// read.
var errChanged = errors.New("changed meanwhile")
