package api

import (
	"context"
	"time"

	"github.com/mhcodi/mhcodi/fencing/ledger"
)

// Paths the ops CLI needs besides PathOp.
const (
	// PathCluster (GET, local socket only): ClusterView, gathered by the
	// node's fenced from every node's PathNode and its ledger
	// (ops.Gather), so the CLI needs no certificates of its own.
	PathCluster = "/v1/cluster"
	// PathConfig (GET): ConfigInfo, the digest of the cluster file the
	// node's fenced runs with, so verify can tell files that differ.
	PathConfig = "/v1/config"
)

// ClusterView is the whole cluster as one node sees it now: the ledger,
// and every node of the cluster file with its answer (or why it gave
// none). mhcodi status prints it and mhcodi verify checks it.
type ClusterView struct {
	// Self is the node that gathered the view.
	Self string    `json:"self"`
	Time time.Time `json:"time"`
	// Quorum says whether the ledger could be written when the view was
	// gathered; LedgerErr says why not.
	Quorum    bool   `json:"quorum"`
	LedgerErr string `json:"ledger_err,omitempty"`
	// LedgerStale is set when Records are Self's last read of the ledger
	// (it had no quorum), which may be behind.
	LedgerStale bool            `json:"ledger_stale,omitempty"`
	Records     []ledger.Record `json:"records"`
	// Holders maps a guest to the node holding its lease (guests whose
	// lease nobody holds are left out); read only with quorum.
	Holders map[string]string `json:"holders,omitempty"`
	// Nodes are every node of the cluster file, in file order.
	Nodes []NodeView `json:"nodes"`
}

// NodeView is one node in a ClusterView.
type NodeView struct {
	Node string `json:"node"`
	Role string `json:"role"`
	// Up says the node's fenced answered PathNode; Err says why not.
	Up     bool       `json:"up"`
	Err    string     `json:"err,omitempty"`
	Status NodeStatus `json:"status,omitzero"`
	// ConfigDigest is ConfigInfo.Digest of the node ("" when it did not
	// say: a fenced without PathConfig, or down).
	ConfigDigest string `json:"config_digest,omitempty"`
}

// ConfigInfo is PathConfig's answer.
type ConfigInfo struct {
	Node string `json:"node"`
	Path string `json:"path"`
	// Digest is ops.ConfigDigest of the loaded file: equal digests mean
	// the same cluster, whatever the comments and key order.
	Digest string `json:"digest"`
}

// ClusterClient is a Client that can also fetch PathCluster (the local
// socket's client).
type ClusterClient interface {
	Cluster(ctx context.Context) (ClusterView, error)
}

// ConfigClient is a Client that can also fetch PathConfig.
type ConfigClient interface {
	Config(ctx context.Context) (ConfigInfo, error)
}
