// Package api is the contract between mhcodi-fenced daemons, and between
// the mhcodi CLI and its node's fenced: the request and response bodies of
// the HTTP/JSON API (HTTPS with the cluster's certificates between nodes on
// the management address; a root-only unix socket for the local CLI), and
// the client.
package api

import (
	"time"

	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/guestraid/channel"
)

// Paths of the API. {guest} is a guest name.
const (
	PathNode    = "/v1/node"                   // GET: NodeStatus
	PathLedger  = "/v1/ledger"                 // GET: []ledger.Record as this node last read them
	PathFence   = "/v1/fence"                  // POST FenceRequest: fence this node's legs of a guest (its targetd)
	PathStart   = "/v1/guests/{guest}/start"   // POST StartRequest: start the guest here (owner and epoch checked against the ledger)
	PathStop    = "/v1/guests/{guest}/stop"    // POST StopRequest: ACPI, then destroy after the timeout
	PathDestroy = "/v1/guests/{guest}/destroy" // POST: destroy at once
	PathOp      = "/v1/ops"                    // POST OpRequest (local socket only): run an operation; NDJSON Progress lines, the last one Done
	PathJoin    = "/v1/members/join"           // POST JoinRequest: add the caller as a new etcd member (rejoin after a forced failover)
)

// LedgerResponse is PathLedger's answer: the records as this node can
// read them. A node without quorum answers from its last read (Stale
// true), so a returning node can still learn that it lost a guest.
type LedgerResponse struct {
	Node     string          `json:"node"`
	Records  []ledger.Record `json:"records"`
	Quorum   bool            `json:"quorum"`
	Stale    bool            `json:"stale,omitempty"`
	Revision int64           `json:"revision"`
}

// NodeStatus is what a fenced says about its node.
type NodeStatus struct {
	Node string `json:"node"`
	Role string `json:"role"`
	// Quorum says whether this node's ledger can be written now.
	Quorum bool `json:"quorum"`
	// LedgerErr says why not.
	LedgerErr string `json:"ledger_err,omitempty"`
	// Guests are the guests the local hypervisor runs.
	Guests []hypervisor.Status `json:"guests"`
	// Legs are the guests' arrays as their guestraid last reported them
	// (guest → disk → state).
	Legs map[string]map[string]channel.State `json:"legs,omitempty"`
	// Stalled are the arrays whose sync has not progressed for a while,
	// in seconds (guest → disk; only those syncing and standing still).
	Stalled map[string]map[string]float64 `json:"stalled,omitempty"`
	// Exports are the local targetd's exports with their fencing owner and
	// epoch.
	Exports []Export `json:"exports"`
	// Bridges are this node's bridges of the cluster file's service
	// networks, each with whether it is there; nil from a fenced that
	// does not report them.
	Bridges []hypervisor.BridgeInfo `json:"bridges,omitempty"`
	// MemoryFreeMiB is the host's available memory, for N+1 checks.
	MemoryFreeMiB uint64    `json:"memory_free_mib"`
	Time          time.Time `json:"time"`
}

// Export is one leg the node's targetd exports.
type Export struct {
	Guest    string `json:"guest"`
	Disk     string `json:"disk"`
	Target   string `json:"target"`
	Owner    string `json:"owner,omitempty"` // fenced to this node's initiator; "" = not fenced
	Epoch    uint64 `json:"epoch"`
	Sessions int    `json:"sessions"`
	// SyncError is the failed fdatasync that latched the export's volume
	// (targetd fails every later write and sync of it): the leg holds
	// writes that may be lost and needs a full resync.
	SyncError string `json:"sync_error,omitempty"`
}

// FenceRequest asks a node to accept guest's LUNs (every disk, or Disk)
// only from owner's initiator at epoch, dropping other sessions first.
type FenceRequest struct {
	Guest string `json:"guest"`
	Disk  string `json:"disk,omitempty"`
	Owner string `json:"owner"`
	Epoch uint64 `json:"epoch"`
}

// StartRequest starts a guest on the node that receives it. The node
// checks that the ledger names it owner at Epoch before it starts.
type StartRequest struct {
	Epoch uint64   `json:"epoch"`
	Stale []string `json:"stale,omitempty"` // nodes whose legs are stale
}

// StopRequest stops a guest.
type StopRequest struct {
	Timeout time.Duration `json:"timeout"`
}

// Operations of OpRequest.
const (
	OpCreate      = "guest-create"      // the legs' volumes on both nodes, a ledger record, stopped
	OpStart       = "guest-start"       // Guest on To (default: its preferred node)
	OpStop        = "guest-stop"        // Guest
	OpFailover    = "guest-failover"    // Guest to To; Force: the other node is down (no quorum needed)
	OpDestroy     = "guest-destroy"     // Guest: pull the plug wherever it runs; the record stays, stopped
	OpEvacuate    = "node-evacuate"     // every guest owned by Node to its other leg's node
	OpDeclareDead = "node-declare-dead" // Node is down: its legs stale, its guests failed over (Force)
)

// OpRequest is an operation for the local fenced to carry out.
type OpRequest struct {
	Op    string `json:"op"`
	Guest string `json:"guest,omitempty"`
	Node  string `json:"node,omitempty"`
	To    string `json:"to,omitempty"`
	Force bool   `json:"force,omitempty"`
}

// Progress is one line of an operation's output. The last line has Done
// set; Err, when set, says why the operation was refused or failed and
// what is left as it was.
type Progress struct {
	Time    time.Time `json:"time"`
	Step    string    `json:"step"` // e.g. "ledger", "fence node-b", "stop node-a", "start node-b"
	Message string    `json:"message"`
	Done    bool      `json:"done,omitempty"`
	Err     string    `json:"err,omitempty"`
	// Hint says what would make a refused operation allowed.
	Hint string `json:"hint,omitempty"`
}

// JoinRequest asks a member of the ledger to add the caller, whose etcd
// data is gone (it was forked away by a forced failover), as a new member.
type JoinRequest struct {
	Node    string `json:"node"`
	PeerURL string `json:"peer_url"`
}

// JoinResponse tells the joiner how to start its member.
type JoinResponse struct {
	InitialCluster string `json:"initial_cluster"` // name=url,… as etcd's --initial-cluster
}
