package ops

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/ledger"
)

// Kind is what a step does.
type Kind string

// Kinds of steps, in the order a move runs them: the ledger first, so
// that whatever fails later, the epoch already fences the old runner out.
const (
	StepFork    Kind = "fork"    // Env.ForceNewCluster
	StepCreate  Kind = "create"  // a stopped ledger record
	StepClaim   Kind = "claim"   // epoch+1, new owner, stale legs, desired
	StepDesired Kind = "desired" // the desired state only
	StepFence   Kind = "fence"   // a node's targetd accepts the guest's legs only from the owner
	StepStop    Kind = "stop"    // ACPI, then destroy after the stop timeout
	StepDestroy Kind = "destroy" // pull the plug
	StepStart   Kind = "start"   // start on the owner with the stale list
)

// Step is one action of a plan.
type Step struct {
	Kind  Kind   `json:"kind"`
	Guest string `json:"guest,omitempty"`
	// Node is where the step acts: the node fenced, stopped, destroyed
	// or started on; a claim's new owner.
	Node string `json:"node,omitempty"`
	// Epoch and Owner are the record as the plan read it (claim,
	// desired): the transaction refuses if it changed meanwhile, since
	// the plan was decided on it.
	Epoch uint64 `json:"epoch,omitempty"`
	Owner string `json:"owner,omitempty"`
	// Stale are the nodes whose legs a claim marks stale.
	Stale []string `json:"stale,omitempty"`
	// Desired is what a claim or desired step records.
	Desired string `json:"desired,omitempty"`
	Why     string `json:"why,omitempty"`
	// Timeout is a stop's grace before the plug is pulled.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// Plan is what an operation will do.
type Plan struct {
	Op string `json:"op"`
	// Notes are said before the steps run: what the plan leaves alone,
	// and why.
	Notes []string `json:"notes,omitempty"`
	Steps []Step   `json:"steps"`
	// Done is the last line's message when every step succeeded.
	Done string `json:"done"`
}

// PlanOp dispatches an OpRequest to its planner.
func PlanOp(f Facts, r api.OpRequest) (Plan, error) {
	var p Plan
	var err error
	switch r.Op {
	case api.OpCreate:
		p, err = PlanCreate(f, r.Guest)
	case api.OpStart:
		p, err = PlanStart(f, r.Guest, r.To)
	case api.OpStop:
		p, err = PlanStop(f, r.Guest)
	case api.OpFailover:
		p, err = PlanFailover(f, r.Guest, r.To, r.Force, "")
	case api.OpDestroy:
		p, err = PlanDestroy(f, r.Guest)
	case api.OpEvacuate:
		p, err = PlanEvacuate(f, r.Node)
	case api.OpDeclareDead:
		p, err = PlanDeclareDead(f, r.Node)
	default:
		return Plan{}, refuse("one of: "+strings.Join(allOps, ", "), fmt.Sprintf("unknown operation %q", r.Op))
	}
	p.Op = r.Op
	return p, err
}

var allOps = []string{api.OpCreate, api.OpStart, api.OpStop, api.OpFailover, api.OpDestroy, api.OpEvacuate, api.OpDeclareDead}

// needGuestName refuses an empty guest name.
func needGuestName(guest string) error {
	if guest == "" {
		return refuse("name the guest", "no guest given")
	}
	return nil
}

// PlanCreate writes a stopped ledger record for a guest of the cluster
// file. Its volumes are mhcodi volume create's business.
func PlanCreate(f Facts, guest string) (Plan, error) {
	if err := needGuestName(guest); err != nil {
		return Plan{}, err
	}
	if _, err := f.guestOf(guest); err != nil {
		return Plan{}, err
	}
	if r, ok := f.record(guest); ok {
		return Plan{Notes: []string{fmt.Sprintf("%s is in the ledger already (%s)", guest, describe(r))},
			Done: guest + " is in the ledger"}, nil
	}
	if !f.View.Quorum {
		return Plan{}, noQuorum(f, "a create must write the ledger", guest)
	}
	return Plan{Steps: []Step{{Kind: StepCreate, Guest: guest, Desired: ledger.DesiredStopped, Why: "create"}},
		Done: guest + " is in the ledger, stopped"}, nil
}

// PlanStart starts a guest that runs nowhere on to (default: its
// preferred node, else its owner, else the first node that holds a leg
// of every disk).
func PlanStart(f Facts, guest, to string) (Plan, error) {
	if err := needGuestName(guest); err != nil {
		return Plan{}, err
	}
	g, err := f.guestOf(guest)
	if err != nil {
		return Plan{}, err
	}
	rec, _ := f.record(guest)
	if to == "" {
		to = defaultStart(g, rec)
	}
	if err := f.checkDest(g, to); err != nil {
		return Plan{}, err
	}
	running := f.runningOn(guest)
	if len(running) == 1 && running[0] == to && rec.Owner == to && rec.Desired == ledger.DesiredRunning {
		return Plan{Notes: []string{fmt.Sprintf("%s runs on %s already, its owner at epoch %d", guest, to, rec.Epoch)},
			Done: guest + " runs on " + to}, nil
	}
	if len(running) > 0 {
		other := firstOther(candidates(g), running[0])
		hint := fmt.Sprintf("stop it first (mhcodi guest stop %s)", guest)
		if other != "" {
			hint += fmt.Sprintf(", or move it with mhcodi guest failover %s --to %s", guest, other)
		}
		return Plan{}, refuse(hint, fmt.Sprintf("%s is already running on %s", guest, andList(running)))
	}
	if !f.View.Quorum {
		return Plan{}, noQuorum(f, "a start must write the ledger", guest)
	}
	if h := f.holder(guest); h != "" && h != to {
		return Plan{}, refuse(
			fmt.Sprintf("stop it there first (mhcodi guest stop %s), or wait for the lease to expire and run again", guest),
			fmt.Sprintf("%s is owned by %s, whose lease on it is live (it runs it, or did within timeouts.lease_ttl)", guest, h))
	}
	fence, stale, err := f.legPlan(g, rec, to)
	if err != nil {
		return Plan{}, err
	}
	steps := []Step{{Kind: StepClaim, Guest: guest, Node: to, Epoch: rec.Epoch, Owner: rec.Owner, Stale: stale,
		Desired: ledger.DesiredRunning, Why: "start"}}
	steps = append(steps, fenceSteps(guest, fence)...)
	steps = append(steps, Step{Kind: StepStart, Guest: guest, Node: to})
	return Plan{Steps: steps, Done: guest + " runs on " + to}, nil
}

// defaultStart is where a start goes when --to is not given.
func defaultStart(g *configs.Guest, rec ledger.Record) string {
	switch c := candidates(g); {
	case g.PreferredNode != "":
		return g.PreferredNode
	case rec.Owner != "":
		return rec.Owner
	case len(c) > 0:
		return c[0]
	}
	return ""
}

// PlanFailover moves a guest to to: claim, fence, stop where it ran,
// start on to (start only when it is meant to run). Without force it
// needs the ledger's quorum, and every node it would leave behind must
// answer unless quorum mode can vouch that it is gone (its lease
// expired). With force, the sysadmin vouches instead: a ledger without
// quorum is forked to this node first, and the legs on nodes that do not
// answer are marked stale. why overrides the ledger's reason.
func PlanFailover(f Facts, guest, to string, force bool, why string) (Plan, error) {
	if err := needGuestName(guest); err != nil {
		return Plan{}, err
	}
	g, err := f.guestOf(guest)
	if err != nil {
		return Plan{}, err
	}
	rec, _ := f.record(guest)
	running := f.runningOn(guest)
	from := rec.Owner
	if from == "" && len(running) == 1 {
		from = running[0]
	}
	if to == "" {
		if to, err = f.defaultFailover(g, from); err != nil {
			return Plan{}, err
		}
	}
	if err := f.checkDest(g, to); err != nil {
		return Plan{}, err
	}
	if slices.Contains(running, to) {
		return Plan{}, refuse(fmt.Sprintf("name another node with --to (%s can run on %s)", guest, orList(candidates(g))),
			fmt.Sprintf("%s already runs on %s", guest, to))
	}
	var down []string // nodes left behind that did not answer
	for _, n := range appendNew(legNodes(g), from) {
		if n != "" && n != to && !f.up(n) {
			down = append(down, n)
		}
	}
	var steps []Step
	if !force {
		if len(down) > 0 && (!f.View.Quorum || !QuorumMode(f.Cfg)) {
			n := down[0]
			if slices.Contains(down, from) {
				n = from
			}
			reason := fmt.Sprintf("%s is unreachable and the ledger has no quorum; if %s is really down, run again with --force", n, n)
			if f.View.Quorum {
				reason = fmt.Sprintf("%s is unreachable and, with two nodes and no witness, nothing vouches that it is down; if %s is really down, run again with --force", n, n)
			}
			return Plan{}, refuse(fmt.Sprintf("mhcodi guest failover %s --to %s --force: %s's legs are marked stale%s and %s is started on %s; or bring %s back",
				guest, to, andList(down), ifElse(f.View.Quorum, "", ", the ledger is forked to "+to), guest, to, n), reason)
		}
		if !f.View.Quorum {
			return Plan{}, noQuorum(f, "a failover must write the ledger", guest)
		}
		if h := f.holder(guest); h != "" && h != to && !f.up(h) {
			return Plan{}, refuse(
				fmt.Sprintf("wait %s for the lease to expire (%s destroys its guests before then) and run again; if %s is really down, run again with --force", f.Cfg.Timeouts.LeaseTTL, h, h),
				fmt.Sprintf("%s's lease is still held by %s, which does not answer: %s may still run there", guest, h, guest))
		}
	} else if !f.View.Quorum {
		fork, err := f.planFork(to)
		if err != nil {
			return Plan{}, err
		}
		steps = append(steps, fork)
	}
	fence, stale, err := f.legPlan(g, rec, to)
	if err != nil {
		return Plan{}, err
	}
	startIt := rec.Desired == ledger.DesiredRunning || len(running) > 0
	desired := ledger.DesiredStopped
	if startIt {
		desired = ledger.DesiredRunning
	}
	if why == "" {
		why = ifElse(force, "forced failover", "failover")
	}
	// Where it runs (on nodes that answer), the guest is stopped cleanly
	// before the ledger changes hands: a claim first would have the old
	// owner's monitor see a guest it no longer owns and destroy it, in a
	// race with the stop (issue 12). Recording it stopped first keeps
	// automatic failover from starting it elsewhere while it shuts down,
	// and leaves a ledger that says what is true if the move stops
	// halfway. The claim then needs no stop after it: nothing runs.
	if len(running) > 0 {
		if rec.Desired == ledger.DesiredRunning {
			steps = append(steps, Step{Kind: StepDesired, Guest: guest, Epoch: rec.Epoch, Owner: rec.Owner,
				Desired: ledger.DesiredStopped, Why: why + " to " + to + ": stopping"})
		}
		for _, n := range running {
			steps = append(steps, Step{Kind: StepStop, Guest: guest, Node: n, Timeout: f.Cfg.Hypervisor.StopTimeout})
		}
	}
	steps = append(steps, Step{Kind: StepClaim, Guest: guest, Node: to, Epoch: rec.Epoch, Owner: rec.Owner, Stale: stale,
		Desired: desired, Why: why})
	steps = append(steps, fenceSteps(guest, fence)...)
	p := Plan{Done: guest + " is owned by " + to + " (stopped, as it was)"}
	if startIt {
		steps = append(steps, Step{Kind: StepStart, Guest: guest, Node: to})
		p.Done = guest + " runs on " + to
	} else {
		p.Notes = append(p.Notes, guest+" is stopped: it changes owner but is not started")
	}
	p.Steps = steps
	return p, nil
}

// planFork checks that a ledger without quorum may be forked to this
// node for a forced move to to.
func (f Facts) planFork(to string) (Step, error) {
	if to != f.Self {
		return Step{}, refuse(fmt.Sprintf("run it on %s (mhcodi … --node %s)", to, to),
			fmt.Sprintf("the ledger has no quorum, so a forced move forks it to the node that runs the command, %s, but the guests go to %s", f.Self, to))
	}
	var others, up []string
	for _, n := range f.Cfg.Nodes {
		if n.Name == f.Self {
			continue
		}
		others = append(others, n.Name)
		if f.up(n.Name) {
			up = append(up, n.Name)
		}
	}
	if len(others) > 0 && len(up) == len(others) {
		return Step{}, refuse("repair the ledger between the nodes (every node answers, so etcd's members cannot reach each other or are stopped); --force is only for a node that is really down",
			fmt.Sprintf("--force says the other nodes are down, but %s answer%s; the ledger has no quorum for another reason (%s)",
				andList(up), ifElse(len(up) == 1, "s", ""), f.View.LedgerErr))
	}
	return Step{Kind: StepFork, Node: f.Self}, nil
}

// defaultFailover is the node a failover goes to without --to: the
// only other node that holds a leg of every disk.
func (f Facts) defaultFailover(g *configs.Guest, from string) (string, error) {
	var others []string
	for _, n := range candidates(g) {
		if n != from {
			others = append(others, n)
		}
	}
	switch len(others) {
	case 1:
		return others[0], nil
	case 0:
		return "", refuse("give its disks a leg on another node (mhcodi volume create there, then the cluster file)",
			fmt.Sprintf("%s has nowhere to go: no node other than %s holds a leg of every disk", g.Name, ifElse(from == "", "its owner", from)))
	}
	return "", refuse("say where with --to", fmt.Sprintf("%s can go to %s", g.Name, orList(others)))
}

// checkDest refuses a destination that cannot run g.
func (f Facts) checkDest(g *configs.Guest, to string) error {
	cands := candidates(g)
	n, ok := f.Cfg.Node(to)
	switch {
	case to == "":
		return refuse("say where with --to", g.Name+" has no node to run on")
	case !ok:
		return refuse(fmt.Sprintf("%s can run on %s", g.Name, orList(cands)), fmt.Sprintf("node %q is not in %s", to, f.Cfg.Path))
	case n.Role != configs.RoleStorage:
		return refuse(fmt.Sprintf("%s can run on %s", g.Name, orList(cands)), fmt.Sprintf("%s is a %s: it runs no guests", to, n.Role))
	case !slices.Contains(cands, to):
		var missing []string
		for _, d := range g.Disks {
			if !slices.Contains(d.Legs, to) {
				missing = append(missing, d.Name)
			}
		}
		return refuse(fmt.Sprintf("nodes that hold a leg of every disk of %s: %s", g.Name, joinOr(cands, "none")),
			fmt.Sprintf("%s holds no leg of %s's disk%s %s", to, g.Name, ifElse(len(missing) == 1, "", "s"), andList(missing)))
	case !f.up(to):
		return refuse(fmt.Sprintf("start %s's mhcodi-fenced, or choose another node (%s can run on %s)", to, g.Name, orList(cands)),
			fmt.Sprintf("%s does not answer (%s)", to, f.whyDown(to)))
	}
	if probs := f.bridgeProblems(g, to); len(probs) > 0 {
		var others []string
		for _, c := range cands {
			if c != to {
				others = append(others, c)
			}
		}
		hint := fmt.Sprintf("create the bridge on %s (or name %s's own bridge in nodes[].networks of the cluster file)", to, to)
		if len(others) > 0 {
			hint += fmt.Sprintf(", or choose another node (%s can run on %s)", g.Name, orList(others))
		}
		return refuse(hint, fmt.Sprintf("%s cannot carry %s's NICs: %s", to, g.Name, strings.Join(probs, "; ")))
	}
	return nil
}

// bridgeProblems says, for each of g's NICs, what keeps to's bridge of
// its network from carrying it, from what to's fenced reported: a node
// that reports no bridges (an older fenced) is not second-guessed, and its
// driver still checks before qemu starts.
func (f Facts) bridgeProblems(g *configs.Guest, to string) []string {
	nv, ok := f.node(to)
	if !ok || nv.Status.Bridges == nil {
		return nil
	}
	var out []string
	for _, nic := range g.NICs {
		br := f.Cfg.BridgeFor(to, nic.Network)
		for _, bi := range nv.Status.Bridges {
			if bi.Name != br {
				continue
			}
			if p := bi.Problem(f.Cfg.Networks[nic.Network].VLAN); p != "" {
				out = append(out, fmt.Sprintf("NIC %s (network %s): %s", nic.Name, nic.Network, p))
			}
		}
	}
	return out
}

// legPlan splits g's leg nodes into those to fence (they answered) and
// those to mark stale (they did not), and refuses when a disk would be
// left without a leg that holds its newest writes.
func (f Facts) legPlan(g *configs.Guest, rec ledger.Record, to string) (fence, stale []string, err error) {
	for _, n := range legNodes(g) {
		if f.up(n) {
			fence = append(fence, n)
		} else {
			stale = append(stale, n)
		}
	}
	for _, d := range g.Disks {
		var why []string
		good := false
		for _, n := range d.Legs {
			switch e, wasStale := rec.Stale[n]; {
			case wasStale:
				why = append(why, fmt.Sprintf("the leg on %s is stale since epoch %d", n, e))
			case !f.up(n):
				why = append(why, fmt.Sprintf("%s does not answer", n))
			default:
				good = true
			}
		}
		if !good {
			return nil, nil, refuse("bring back the node whose leg holds the newest writes (mhcodi status shows which legs are stale since when)",
				fmt.Sprintf("%s's disk %s would have no current leg on %s: %s", g.Name, d.Name, to, strings.Join(why, "; ")))
		}
	}
	return fence, stale, nil
}

func fenceSteps(guest string, nodes []string) []Step {
	var out []Step
	for _, n := range nodes {
		out = append(out, Step{Kind: StepFence, Guest: guest, Node: n})
	}
	return out
}

// noQuorum refuses an operation that must write a ledger without
// quorum, saying what would give it one.
func noQuorum(f Facts, what, guest string) error {
	var down []string
	for _, n := range f.Cfg.Nodes {
		if !f.up(n.Name) {
			down = append(down, n.Name)
		}
	}
	hint := "every node answers, so the ledger's members cannot reach each other: repair etcd between them"
	if len(down) > 0 {
		hint = fmt.Sprintf("bring %s back", andList(down))
		if guest != "" {
			hint += fmt.Sprintf("; if %s %s really down, mhcodi guest failover %s --to %s --force forks the ledger to %s and starts %s there",
				andList(down), ifElse(len(down) == 1, "is", "are"), guest, f.Self, f.Self, guest)
		} else {
			hint += fmt.Sprintf("; if %s %s really down, mhcodi node declare-dead forks the ledger to %s",
				andList(down), ifElse(len(down) == 1, "is", "are"), f.Self)
		}
	}
	return refuse(hint, fmt.Sprintf("the ledger has no quorum (%s): %s", orDefault(f.View.LedgerErr, "no reason given"), what))
}

// PlanStop records the guest stopped and stops it wherever it runs. A
// ledger without quorum cannot record it: in two-node mode the stop goes
// ahead (nothing restarts guests there) and says so; in quorum mode with
// automatic failover it is refused, since the guest would be started
// again elsewhere.
func PlanStop(f Facts, guest string) (Plan, error) {
	return planHalt(f, guest, StepStop)
}

// PlanDestroy pulls the plug wherever the guest runs and records it
// stopped; it works without quorum too (it is the emergency brake), and
// on guests the cluster file no longer names.
func PlanDestroy(f Facts, guest string) (Plan, error) {
	return planHalt(f, guest, StepDestroy)
}

func planHalt(f Facts, guest string, kind Kind) (Plan, error) {
	if err := needGuestName(guest); err != nil {
		return Plan{}, err
	}
	_, inFile := f.Cfg.Guest(guest)
	rec, inLedger := f.record(guest)
	running := f.runningOn(guest)
	if !inFile && !inLedger && len(running) == 0 {
		_, err := f.guestOf(guest)
		return Plan{}, err
	}
	verb := ifElse(kind == StepStop, "stop", "destroy")
	var p Plan
	switch {
	case rec.Desired == ledger.DesiredStopped || (!inLedger && !inFile):
	case f.View.Quorum:
		p.Steps = append(p.Steps, Step{Kind: StepDesired, Guest: guest, Epoch: rec.Epoch, Owner: rec.Owner,
			Desired: ledger.DesiredStopped, Why: verb})
	case kind == StepStop && QuorumMode(f.Cfg) && f.Cfg.Fencing.AutoFailover && rec.Desired == ledger.DesiredRunning:
		return Plan{}, refuse(fmt.Sprintf("bring the ledger back first, or pull the plug with mhcodi guest destroy %s (it will be started again elsewhere once the ledger has quorum)", guest),
			fmt.Sprintf("the ledger has no quorum (%s): %s could not be recorded stopped, and automatic failover would start it again", orDefault(f.View.LedgerErr, "no reason given"), guest))
	default:
		p.Notes = append(p.Notes, fmt.Sprintf("the ledger has no quorum (%s): %s stays desired %q in it; run mhcodi guest %s %s again once it has quorum",
			orDefault(f.View.LedgerErr, "no reason given"), guest, orDefault(rec.Desired, "—"), verb, guest))
	}
	for _, n := range running {
		p.Steps = append(p.Steps, Step{Kind: kind, Guest: guest, Node: n, Timeout: f.Cfg.Hypervisor.StopTimeout})
	}
	var down []string
	for _, n := range f.Cfg.Nodes {
		if n.Role == configs.RoleStorage && !f.up(n.Name) {
			down = append(down, n.Name)
		}
	}
	if len(down) > 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("%s did not answer: if %s runs there, it is not %s", andList(down), guest, ifElse(kind == StepStop, "stopped", "destroyed")))
	}
	if len(running) == 0 {
		p.Notes = append(p.Notes, guest+" runs on no node that answers")
	}
	p.Done = guest + " is " + ifElse(kind == StepStop, "stopped", "destroyed")
	return p, nil
}

// PlanEvacuate moves every guest node owns to the other node that holds
// its legs, after checking that the destinations have the memory for the
// guests that run (the N+1 rule). The node must answer: a dead node is
// declared dead instead.
func PlanEvacuate(f Facts, node string) (Plan, error) {
	if err := f.checkNodeArg(node); err != nil {
		return Plan{}, err
	}
	if !f.up(node) {
		return Plan{}, refuse(fmt.Sprintf("if %s is down, mhcodi node declare-dead %s fails its guests over", node, node),
			fmt.Sprintf("%s does not answer (%s): an evacuation stops its guests there first", node, f.whyDown(node)))
	}
	if !f.View.Quorum {
		return Plan{}, noQuorum(f, "an evacuation must write the ledger", "")
	}
	return f.planMoveAll(node, false, "evacuate "+node, "evacuated")
}

// PlanDeclareDead is the sysadmin's word that node is down: a ledger
// without quorum is forked to this node, and every guest node owned is
// failed over with node's legs stale.
func PlanDeclareDead(f Facts, node string) (Plan, error) {
	if err := f.checkNodeArg(node); err != nil {
		return Plan{}, err
	}
	if node == f.Self {
		return Plan{}, refuse("run it on a node that survives", fmt.Sprintf("%s cannot declare itself dead", node))
	}
	if f.up(node) {
		return Plan{}, refuse(fmt.Sprintf("mhcodi node evacuate %s moves its guests while it runs", node),
			fmt.Sprintf("%s answers: it is not dead", node))
	}
	return f.planMoveAll(node, true, node+" declared dead", "declared dead")
}

func (f Facts) checkNodeArg(node string) error {
	if node == "" {
		return refuse("name the node", "no node given")
	}
	if _, ok := f.Cfg.Node(node); !ok {
		var names []string
		for _, n := range f.Cfg.Nodes {
			names = append(names, n.Name)
		}
		return refuse("its nodes: "+strings.Join(names, ", "), fmt.Sprintf("node %q is not in %s", node, f.Cfg.Path))
	}
	return nil
}

// planMoveAll fails over every guest node owns, in file order.
func (f Facts) planMoveAll(node string, force bool, why, done string) (Plan, error) {
	type move struct {
		guest *configs.Guest
		to    string
		start bool
	}
	var moves []move
	need := map[string]uint64{}
	names := map[string][]string{}
	var notes []string
	for i := range f.Cfg.Guests {
		g := &f.Cfg.Guests[i]
		rec, _ := f.record(g.Name)
		running := f.runningOn(g.Name)
		if rec.Owner != node {
			if slices.Contains(running, node) {
				notes = append(notes, fmt.Sprintf("%s runs on %s though the ledger gives it to %s: left alone (mhcodi verify)", g.Name, node, orDefault(rec.Owner, "nobody")))
			}
			continue
		}
		to, err := f.bestDest(g, node, need)
		if err != nil {
			return Plan{}, err
		}
		m := move{guest: g, to: to, start: rec.Desired == ledger.DesiredRunning || len(running) > 0}
		if m.start {
			need[to] += memMiB(g)
			names[to] = append(names[to], fmt.Sprintf("%s (%d MiB)", g.Name, memMiB(g)))
		}
		moves = append(moves, m)
	}
	for _, n := range f.Cfg.Nodes {
		nv, _ := f.node(n.Name)
		if need[n.Name] > nv.Status.MemoryFreeMiB {
			return Plan{}, refuse(fmt.Sprintf("stop some of them first (mhcodi guest stop), or free memory on %s", n.Name),
				fmt.Sprintf("%s has %d MiB free, but %s need%s %d MiB", n.Name, nv.Status.MemoryFreeMiB, andList(names[n.Name]),
					ifElse(len(names[n.Name]) == 1, "s", ""), need[n.Name]))
		}
	}
	p := Plan{Notes: notes}
	forked := false
	if force && !f.View.Quorum {
		fork, err := f.planFork(f.Self)
		if err != nil {
			return Plan{}, err
		}
		p.Steps, forked = append(p.Steps, fork), true
	}
	var moved []string
	for _, m := range moves {
		if forked && m.to != f.Self {
			return Plan{}, refuse(fmt.Sprintf("run it on %s, or bring the other nodes back", m.to),
				fmt.Sprintf("the ledger is forked to %s alone, but %s would go to %s, which could not check its ownership", f.Self, m.guest.Name, m.to))
		}
		// Once the ledger is forked, the moves are planned as the fork
		// will leave it: with quorum.
		ff := f
		if forked {
			ff.View.Quorum = true
		}
		sub, err := PlanFailover(ff, m.guest.Name, m.to, force, why)
		if err != nil {
			var e *Error
			if asError(err, &e) {
				e.Reason = m.guest.Name + ": " + e.Reason
			}
			return Plan{}, err
		}
		p.Notes = append(p.Notes, sub.Notes...)
		p.Steps = append(p.Steps, sub.Steps...)
		moved = append(moved, m.guest.Name+" to "+m.to)
	}
	if len(moves) == 0 {
		p.Notes = append(p.Notes, node+" owns no guest")
		p.Done = node + " " + done + ": it owned no guest"
		return p, nil
	}
	p.Done = fmt.Sprintf("%s %s: %s", node, done, strings.Join(moved, ", "))
	return p, nil
}

// bestDest picks where a guest of node goes: the node that answers,
// holds a leg of every disk, and has the most memory left after what is
// already planned for it.
func (f Facts) bestDest(g *configs.Guest, node string, need map[string]uint64) (string, error) {
	best, bestFree, found := "", uint64(0), false
	var others []string
	for _, n := range candidates(g) {
		if n == node {
			continue
		}
		others = append(others, n)
		nv, ok := f.node(n)
		if !ok || !nv.Up {
			continue
		}
		free := nv.Status.MemoryFreeMiB - min(need[n], nv.Status.MemoryFreeMiB)
		if !found || free > bestFree {
			best, bestFree, found = n, free, true
		}
	}
	if !found {
		if len(others) == 0 {
			return "", refuse("give its disks a leg on another node",
				fmt.Sprintf("%s has nowhere to go: no node other than %s holds a leg of every disk", g.Name, node))
		}
		return "", refuse(fmt.Sprintf("bring %s back", andList(others)),
			fmt.Sprintf("%s has nowhere to go: %s %s not answer", g.Name, andList(others), ifElse(len(others) == 1, "does", "do")))
	}
	return best, nil
}

// PlanAutoFailover is fenced's own failover of a guest whose owner's
// lease expired, to this node: quorum mode with fencing.auto_failover
// only, for a guest meant to run, that runs on no node that answers,
// whose lease nobody holds, and of which this node holds a leg of every
// disk.
func PlanAutoFailover(f Facts, guest string) (Plan, error) {
	g, err := f.guestOf(guest)
	if err != nil {
		return Plan{}, err
	}
	rec, _ := f.record(guest)
	running := f.runningOn(guest)
	switch {
	case !QuorumMode(f.Cfg):
		return Plan{}, refuse("add a witness node (or a third storage node)", "automatic failover needs quorum mode: three voters, or two and a witness")
	case !f.Cfg.Fencing.AutoFailover:
		return Plan{}, refuse("set fencing.auto_failover: true on every node", "automatic failover is off")
	case !f.View.Quorum:
		return Plan{}, noQuorum(f, "an automatic failover must write the ledger", "")
	case rec.Desired != ledger.DesiredRunning:
		return Plan{}, refuse("start it (mhcodi guest start)", fmt.Sprintf("%s is not meant to run (desired %q)", guest, orDefault(rec.Desired, "—")))
	case f.holder(guest) != "":
		return Plan{}, refuse("none: its owner renews the lease", fmt.Sprintf("%s's lease is held by %s", guest, f.holder(guest)))
	case len(running) > 0:
		return Plan{}, refuse("its fenced there takes the lease again, or destroys it (mhcodi verify)", fmt.Sprintf("%s runs on %s", guest, andList(running)))
	case !slices.Contains(candidates(g), f.Self):
		return Plan{}, refuse("another node that holds its legs takes it", fmt.Sprintf("%s holds no leg of every disk of %s", f.Self, guest))
	}
	return PlanFailover(f, guest, f.Self, false, "automatic failover")
}

// describe says what a record says.
func describe(r ledger.Record) string {
	s := fmt.Sprintf("owner %s at epoch %d, desired %s", orDefault(r.Owner, "none"), r.Epoch, orDefault(r.Desired, "—"))
	if len(r.Stale) > 0 {
		var st []string
		for _, n := range sortedKeys(r.Stale) {
			st = append(st, fmt.Sprintf("%s since epoch %d", n, r.Stale[n]))
		}
		s += ", stale legs: " + strings.Join(st, ", ")
	}
	return s
}
