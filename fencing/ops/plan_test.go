package ops

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/ledger"
)

// short forms of steps, for comparing plans.
func stepStrings(p Plan) []string {
	var out []string
	for _, s := range p.Steps {
		switch s.Kind {
		case StepClaim:
			out = append(out, fmt.Sprintf("claim %s %s from %s@%d stale=%v desired=%s", s.Guest, s.Node, s.Owner, s.Epoch, s.Stale, s.Desired))
		case StepDesired:
			out = append(out, fmt.Sprintf("desired %s %s", s.Guest, s.Desired))
		case StepFork:
			out = append(out, "fork "+s.Node)
		case StepCreate:
			out = append(out, "create "+s.Guest)
		default:
			out = append(out, fmt.Sprintf("%s %s %s", s.Kind, s.Guest, s.Node))
		}
	}
	return out
}

func rec(guest, owner string, epoch uint64, desired string, stale ...string) ledger.Record {
	r := ledger.Record{Guest: guest, Owner: owner, Epoch: epoch, Desired: desired}
	for _, n := range stale {
		if r.Stale == nil {
			r.Stale = map[string]uint64{}
		}
		r.Stale[n] = epoch
	}
	return r
}

const (
	running = ledger.DesiredRunning
	stopped = ledger.DesiredStopped
)

type planCase struct {
	name  string
	w     world
	req   api.OpRequest
	auto  string // AutoFailover of this guest instead of req
	steps []string
	notes []string // substrings, in order, of the plan's notes
	err   string   // the refusal's reason, exactly
	errIn string   // or a substring of it
	hint  string   // substring of the hint
}

func runPlanCases(t *testing.T, cases []planCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var p Plan
			var err error
			if tc.auto != "" {
				p, err = PlanAutoFailover(tc.w.facts(), tc.auto)
			} else {
				p, err = PlanOp(tc.w.facts(), tc.req)
			}
			if tc.err != "" || tc.errIn != "" {
				require.Error(t, err)
				assert.True(t, IsRefusal(err), "a planner only refuses: %v", err)
				var e *Error
				require.ErrorAs(t, err, &e)
				if tc.err != "" {
					assert.Equal(t, tc.err, e.Reason)
				}
				assert.Contains(t, e.Reason, tc.errIn)
				assert.Contains(t, e.Hint, tc.hint)
				assert.NotEmpty(t, e.Hint, "a refusal says what would make it allowed")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.steps, stepStrings(p))
			require.Len(t, p.Notes, len(tc.notes), "%q", p.Notes)
			for i, n := range tc.notes {
				assert.Contains(t, p.Notes[i], n)
			}
			assert.NotEmpty(t, p.Done)
		})
	}
}

func TestPlanStart(t *testing.T) {
	two := loadCfg(t, twoNodeFile)
	three := loadCfg(t, threeNodeFile)
	four := fourNodeCfg(t)
	req := func(g, to string) api.OpRequest { return api.OpRequest{Op: api.OpStart, Guest: g, To: to} }
	runPlanCases(t, []planCase{
		{name: "never started: preferred node, every leg fenced", w: world{cfg: two, self: "node-b"}, req: req("web1", ""),
			steps: []string{"claim web1 node-a from @0 stale=[] desired=running", "fence web1 node-a", "fence web1 node-b", "start web1 node-a"}},
		{name: "to another node", w: world{cfg: two, self: "node-b", records: []ledger.Record{rec("web1", "node-a", 3, stopped)}}, req: req("web1", "node-b"),
			steps: []string{"claim web1 node-b from node-a@3 stale=[] desired=running", "fence web1 node-a", "fence web1 node-b", "start web1 node-b"}},
		{name: "already running elsewhere", w: world{cfg: two, self: "node-b", running: map[string][]string{"node-a": {"web1"}},
			records: []ledger.Record{rec("web1", "node-a", 3, running)}}, req: req("web1", "node-b"),
			err: "web1 is already running on node-a", hint: "mhcodi guest failover web1 --to node-b"},
		{name: "already running there: nothing to do", w: world{cfg: two, self: "node-b", running: map[string][]string{"node-a": {"web1"}},
			records: []ledger.Record{rec("web1", "node-a", 3, running)}}, req: req("web1", ""),
			notes: []string{"web1 runs on node-a already, its owner at epoch 3"}},
		{name: "running on two nodes", w: world{cfg: two, self: "node-b", running: map[string][]string{"node-a": {"web1"}, "node-b": {"web1"}}}, req: req("web1", "node-a"),
			err: "web1 is already running on node-a and node-b", hint: "stop it first"},
		{name: "no quorum, peer down", w: world{cfg: two, self: "node-b", noQuo: true, down: []string{"node-a"}}, req: req("web1", "node-b"),
			errIn: "the ledger has no quorum (etcdserver: request timed out): a start must write the ledger",
			hint:  "if node-a is really down, mhcodi guest failover web1 --to node-b --force"},
		{name: "no quorum, everyone answers", w: world{cfg: two, self: "node-b", noQuo: true}, req: req("web1", "node-b"),
			errIn: "the ledger has no quorum", hint: "repair etcd"},
		{name: "unknown node", w: world{cfg: two, self: "node-b"}, req: req("web1", "node-c"),
			errIn: `node "node-c" is not in`, hint: "web1 can run on node-a or node-b"},
		{name: "unknown guest", w: world{cfg: two, self: "node-b"}, req: req("nope", ""),
			errIn: `guest "nope" is not in`, hint: "add it to the cluster file"},
		{name: "no guest named", w: world{cfg: two, self: "node-b"}, req: req("", ""), err: "no guest given", hint: "name the guest"},
		{name: "destination down", w: world{cfg: three, self: "node-b", down: []string{"node-a"}}, req: req("mail", "node-a"),
			err: "node-a does not answer (dial tcp: connection refused)", hint: "choose another node"},
		{name: "witness runs no guests", w: world{cfg: three, self: "node-b"}, req: req("mail", "quorum"),
			err: "quorum is a witness: it runs no guests", hint: "mail can run on node-a or node-b"},
		{name: "destination without a leg of every disk", w: world{cfg: four, self: "node-b"}, req: req("split", "node-b"),
			err: "node-b holds no leg of split's disk data", hint: "nodes that hold a leg of every disk of split: node-a"},
		{name: "live lease elsewhere", w: world{cfg: three, self: "node-b", records: []ledger.Record{rec("mail", "node-a", 2, running)},
			holders: map[string]string{"mail": "node-a"}}, req: req("mail", "node-b"),
			errIn: "mail is owned by node-a, whose lease on it is live", hint: "stop it there first"},
		{name: "quorum mode, a leg node down: its leg stale", w: world{cfg: three, self: "node-a", down: []string{"node-b"},
			records: []ledger.Record{rec("mail", "node-a", 2, stopped)}}, req: req("mail", ""),
			steps: []string{"claim mail node-a from node-a@2 stale=[node-b] desired=running", "fence mail node-a", "start mail node-a"}},
		{name: "the only current leg is out of reach", w: world{cfg: three, self: "node-a", down: []string{"node-b"},
			records: []ledger.Record{rec("mail", "node-b", 5, stopped, "node-a")}}, req: req("mail", "node-a"),
			err:  "mail's disk root would have no current leg on node-a: the leg on node-a is stale since epoch 5; node-b does not answer",
			hint: "bring back the node whose leg holds the newest writes"},
	})
}

func TestPlanFailover(t *testing.T) {
	two := loadCfg(t, twoNodeFile)
	three := loadCfg(t, threeNodeFile)
	four := fourNodeCfg(t)
	req := func(g, to string, force bool) api.OpRequest {
		return api.OpRequest{Op: api.OpFailover, Guest: g, To: to, Force: force}
	}
	onA := map[string][]string{"node-a": {"web1"}}
	web1A := []ledger.Record{rec("web1", "node-a", 4, running)}
	runPlanCases(t, []planCase{
		// Stopped cleanly before the claim: a claim first has the old
		// owner's monitor destroy it as foreign (issue 12).
		{name: "planned: record stopped, stop the old, claim, fence both, start the new", w: world{cfg: two, self: "node-b", running: onA, records: web1A},
			req: req("web1", "", false),
			steps: []string{"desired web1 stopped", "stop web1 node-a",
				"claim web1 node-b from node-a@4 stale=[] desired=running", "fence web1 node-a", "fence web1 node-b", "start web1 node-b"}},
		{name: "two nodes, peer unreachable, no --force", w: world{cfg: two, self: "node-b", noQuo: true, down: []string{"node-a"}, records: web1A},
			req:  req("web1", "node-b", false),
			err:  "node-a is unreachable and the ledger has no quorum; if node-a is really down, run again with --force",
			hint: "mhcodi guest failover web1 --to node-b --force"},
		{name: "two nodes, peer unreachable, --force: fork, stale, start", w: world{cfg: two, self: "node-b", noQuo: true, down: []string{"node-a"}, records: web1A},
			req:   req("web1", "node-b", true),
			steps: []string{"fork node-b", "claim web1 node-b from node-a@4 stale=[node-a] desired=running", "fence web1 node-b", "start web1 node-b"}},
		{name: "--force while the peer answers and the ledger has no quorum", w: world{cfg: two, self: "node-b", noQuo: true, running: onA, records: web1A},
			req: req("web1", "node-b", true), errIn: "--force says the other nodes are down, but node-a answers", hint: "repair the ledger"},
		{name: "--force forks to the node that runs it only", w: world{cfg: four, self: "node-c", noQuo: true, down: []string{"node-a", "wit"},
			records: []ledger.Record{rec("wide", "node-a", 1, running)}},
			req: req("wide", "node-b", true), errIn: "forks it to the node that runs the command, node-c, but the guests go to node-b", hint: "run it on node-b"},
		{name: "--force with quorum: no fork, the word overrides the lease", w: world{cfg: three, self: "node-b", down: []string{"node-a"},
			records: []ledger.Record{rec("mail", "node-a", 7, running)}, holders: map[string]string{"mail": "node-a"}},
			req:   req("mail", "", true),
			steps: []string{"claim mail node-b from node-a@7 stale=[node-a] desired=running", "fence mail node-b", "start mail node-b"}},
		{name: "quorum mode, owner down, lease expired", w: world{cfg: three, self: "node-b", down: []string{"node-a"},
			records: []ledger.Record{rec("mail", "node-a", 7, running)}},
			req:   req("mail", "", false),
			steps: []string{"claim mail node-b from node-a@7 stale=[node-a] desired=running", "fence mail node-b", "start mail node-b"}},
		{name: "quorum mode, owner down, lease live", w: world{cfg: three, self: "node-b", down: []string{"node-a"},
			records: []ledger.Record{rec("mail", "node-a", 7, running)}, holders: map[string]string{"mail": "node-a"}},
			req: req("mail", "", false), err: "mail's lease is still held by node-a, which does not answer: mail may still run there",
			hint: "wait 15s for the lease to expire"},
		{name: "quorum mode, no quorum", w: world{cfg: three, self: "node-b", noQuo: true, records: []ledger.Record{rec("mail", "node-a", 7, running)}},
			req: req("mail", "", false), errIn: "the ledger has no quorum", hint: "repair etcd"},
		{name: "already there", w: world{cfg: two, self: "node-b", running: onA, records: web1A},
			req: req("web1", "node-a", false), err: "web1 already runs on node-a", hint: "name another node with --to"},
		{name: "a stopped guest changes owner and stays stopped", w: world{cfg: two, self: "node-b", records: []ledger.Record{rec("db1", "node-b", 2, stopped)}},
			req:   req("db1", "", false),
			steps: []string{"claim db1 node-a from node-b@2 stale=[] desired=stopped", "fence db1 node-b", "fence db1 node-a"},
			notes: []string{"db1 is stopped: it changes owner but is not started"}},
		{name: "several places to go", w: world{cfg: four, self: "node-a", records: []ledger.Record{rec("wide", "node-c", 1, running)}},
			req: req("wide", "", false), err: "wide can go to node-a or node-b", hint: "say where with --to"},
		{name: "nowhere to go", w: world{cfg: four, self: "node-a", records: []ledger.Record{rec("split", "node-a", 1, running)}},
			req: req("split", "", false), errIn: "split has nowhere to go", hint: "another node"},
		{name: "forced, but the survivor's leg is stale", w: world{cfg: two, self: "node-b", noQuo: true, down: []string{"node-a"},
			records: []ledger.Record{rec("db1", "node-a", 6, running, "node-b")}},
			req: req("db1", "node-b", true), errIn: "db1's disk root would have no current leg on node-b", hint: "bring back"},
	})
}

func TestPlanStopDestroyCreate(t *testing.T) {
	two := loadCfg(t, twoNodeFile)
	auto := loadCfg(t, threeNodeFile)
	auto.Fencing.AutoFailover = true
	onA := map[string][]string{"node-a": {"web1"}}
	runPlanCases(t, []planCase{
		{name: "stop: desired first, then where it runs", w: world{cfg: two, self: "node-b", running: onA, records: []ledger.Record{rec("web1", "node-a", 4, running)}},
			req: api.OpRequest{Op: api.OpStop, Guest: "web1"}, steps: []string{"desired web1 stopped", "stop web1 node-a"}},
		{name: "stop without quorum in two-node mode goes ahead and says so", w: world{cfg: two, self: "node-a", noQuo: true, down: []string{"node-b"}, running: onA,
			records: []ledger.Record{rec("web1", "node-a", 4, running)}},
			req: api.OpRequest{Op: api.OpStop, Guest: "web1"}, steps: []string{"stop web1 node-a"},
			notes: []string{`web1 stays desired "running"`, "node-b did not answer: if web1 runs there, it is not stopped"}},
		{name: "stop without quorum with automatic failover is refused", w: world{cfg: auto, self: "node-a", noQuo: true, running: map[string][]string{"node-a": {"mail"}},
			records: []ledger.Record{rec("mail", "node-a", 4, running)}},
			req: api.OpRequest{Op: api.OpStop, Guest: "mail"}, errIn: "automatic failover would start it again", hint: "mhcodi guest destroy mail"},
		{name: "stop a stopped guest", w: world{cfg: two, self: "node-a", records: []ledger.Record{rec("web1", "node-a", 4, stopped)}},
			req: api.OpRequest{Op: api.OpStop, Guest: "web1"}, notes: []string{"web1 runs on no node that answers"}},
		{name: "destroy a guest the file no longer names", w: world{cfg: two, self: "node-a", running: map[string][]string{"node-b": {"old"}}},
			req: api.OpRequest{Op: api.OpDestroy, Guest: "old"}, steps: []string{"destroy old node-b"}},
		{name: "destroy without quorum still pulls the plug", w: world{cfg: auto, self: "node-a", noQuo: true, running: map[string][]string{"node-a": {"mail"}},
			records: []ledger.Record{rec("mail", "node-a", 4, running)}},
			req: api.OpRequest{Op: api.OpDestroy, Guest: "mail"}, steps: []string{"destroy mail node-a"}, notes: []string{"stays desired"}},
		{name: "destroy an unknown guest", w: world{cfg: two, self: "node-a"},
			req: api.OpRequest{Op: api.OpDestroy, Guest: "old"}, errIn: `guest "old" is not in`, hint: "cluster file"},
		{name: "create", w: world{cfg: two, self: "node-a"}, req: api.OpRequest{Op: api.OpCreate, Guest: "web1"}, steps: []string{"create web1"}},
		{name: "create again", w: world{cfg: two, self: "node-a", records: []ledger.Record{rec("web1", "node-a", 4, stopped)}},
			req: api.OpRequest{Op: api.OpCreate, Guest: "web1"}, notes: []string{"web1 is in the ledger already (owner node-a at epoch 4, desired stopped)"}},
		{name: "create without quorum", w: world{cfg: two, self: "node-a", noQuo: true, down: []string{"node-b"}},
			req: api.OpRequest{Op: api.OpCreate, Guest: "web1"}, errIn: "the ledger has no quorum", hint: "bring node-b back"},
		{name: "unknown op", w: world{cfg: two, self: "node-a"}, req: api.OpRequest{Op: "guest-migrate"}, err: `unknown operation "guest-migrate"`, hint: "guest-start"},
	})
}

func TestPlanNodes(t *testing.T) {
	two := loadCfg(t, twoNodeFile)
	both := []ledger.Record{rec("web1", "node-a", 4, running), rec("db1", "node-a", 2, stopped)}
	onA := map[string][]string{"node-a": {"web1"}}
	runPlanCases(t, []planCase{
		{name: "evacuate: the running guest moves and starts, the stopped one changes owner", w: world{cfg: two, self: "node-b", running: onA, records: both},
			req: api.OpRequest{Op: api.OpEvacuate, Node: "node-a"},
			steps: []string{
				"desired web1 stopped", "stop web1 node-a",
				"claim web1 node-b from node-a@4 stale=[] desired=running", "fence web1 node-a", "fence web1 node-b", "start web1 node-b",
				"claim db1 node-b from node-a@2 stale=[] desired=stopped", "fence db1 node-b", "fence db1 node-a",
			},
			notes: []string{"db1 is stopped"}},
		{name: "evacuate: not enough memory (N+1)", w: world{cfg: two, self: "node-b", running: onA, records: both, mem: map[string]uint64{"node-b": 1024}},
			req: api.OpRequest{Op: api.OpEvacuate, Node: "node-a"},
			err: "node-b has 1024 MiB free, but web1 (2048 MiB) needs 2048 MiB", hint: "mhcodi guest stop"},
		{name: "evacuate a node that does not answer", w: world{cfg: two, self: "node-b", noQuo: true, down: []string{"node-a"}, records: both},
			req: api.OpRequest{Op: api.OpEvacuate, Node: "node-a"}, errIn: "node-a does not answer", hint: "mhcodi node declare-dead node-a"},
		{name: "evacuate a node that owns nothing", w: world{cfg: two, self: "node-a", records: both},
			req: api.OpRequest{Op: api.OpEvacuate, Node: "node-b"}, notes: []string{"node-b owns no guest"}},
		{name: "evacuate an unknown node", w: world{cfg: two, self: "node-a"},
			req: api.OpRequest{Op: api.OpEvacuate, Node: "node-z"}, errIn: `node "node-z" is not in`, hint: "node-a, node-b"},
		{name: "declare dead: fork once, every guest with the dead node's legs stale", w: world{cfg: two, self: "node-b", noQuo: true, down: []string{"node-a"}, records: both},
			req: api.OpRequest{Op: api.OpDeclareDead, Node: "node-a"},
			steps: []string{
				"fork node-b",
				"claim web1 node-b from node-a@4 stale=[node-a] desired=running", "fence web1 node-b", "start web1 node-b",
				"claim db1 node-b from node-a@2 stale=[node-a] desired=stopped", "fence db1 node-b",
			},
			notes: []string{"db1 is stopped"}},
		{name: "declare dead a node that answers", w: world{cfg: two, self: "node-b", running: onA, records: both},
			req: api.OpRequest{Op: api.OpDeclareDead, Node: "node-a"}, err: "node-a answers: it is not dead", hint: "mhcodi node evacuate node-a"},
		{name: "declare itself dead", w: world{cfg: two, self: "node-b"},
			req: api.OpRequest{Op: api.OpDeclareDead, Node: "node-b"}, err: "node-b cannot declare itself dead", hint: "survives"},
	})
}

func TestPlanAutoFailover(t *testing.T) {
	three := loadCfg(t, threeNodeFile)
	auto := loadCfg(t, threeNodeFile)
	auto.Fencing.AutoFailover = true
	two := loadCfg(t, twoNodeFile)
	two.Fencing.AutoFailover = true
	mailA := []ledger.Record{rec("mail", "node-a", 7, running)}
	runPlanCases(t, []planCase{
		{name: "owner down, lease expired: to this node", w: world{cfg: auto, self: "node-b", down: []string{"node-a"}, records: mailA}, auto: "mail",
			steps: []string{"claim mail node-b from node-a@7 stale=[node-a] desired=running", "fence mail node-b", "start mail node-b"}},
		{name: "off by default", w: world{cfg: three, self: "node-b", down: []string{"node-a"}, records: mailA}, auto: "mail",
			err: "automatic failover is off", hint: "fencing.auto_failover"},
		{name: "never with two nodes", w: world{cfg: two, self: "node-b", down: []string{"node-a"}, records: []ledger.Record{rec("web1", "node-a", 1, running)}}, auto: "web1",
			errIn: "needs quorum mode", hint: "witness"},
		{name: "lease still held", w: world{cfg: auto, self: "node-b", down: []string{"node-a"}, records: mailA, holders: map[string]string{"mail": "node-a"}}, auto: "mail",
			err: "mail's lease is held by node-a", hint: "renews"},
		{name: "meant to be stopped", w: world{cfg: auto, self: "node-b", down: []string{"node-a"}, records: []ledger.Record{rec("mail", "node-a", 7, stopped)}}, auto: "mail",
			errIn: "not meant to run", hint: "mhcodi guest start"},
		{name: "runs somewhere", w: world{cfg: auto, self: "node-b", running: map[string][]string{"node-a": {"mail"}}, records: mailA}, auto: "mail",
			err: "mail runs on node-a", hint: "verify"},
		{name: "no quorum", w: world{cfg: auto, self: "node-b", noQuo: true, down: []string{"node-a"}, records: mailA}, auto: "mail",
			errIn: "no quorum", hint: "bring node-a back"},
	})
}

func TestQuorumMode(t *testing.T) {
	assert.False(t, QuorumMode(loadCfg(t, twoNodeFile)))
	assert.True(t, QuorumMode(loadCfg(t, threeNodeFile)))
	ext := loadCfg(t, twoNodeFile)
	ext.Fencing.Etcd.Endpoints = []string{"https://10.0.0.1:2379"}
	assert.True(t, QuorumMode(ext))
	assert.True(t, QuorumMode(fourNodeCfg(t)))
	_ = configs.RoleStorage
}
