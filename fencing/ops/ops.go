// Package ops carries out what the sysadmin asks (start, stop, fail over,
// evacuate, declare dead…) and what fenced does by itself (automatic
// failover after a lease expired): each operation is planned from the
// ledger, the nodes' answers and the cluster file by pure functions, then
// executed step by step with progress, and refused with a reason and a
// hint when it is not safe.
package ops

import (
	"context"

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
