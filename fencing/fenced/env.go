package fenced

import (
	"context"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/fencing/ops"
)

// Env is what the Operator runs against: this Server.
type Env struct{ s *Server }

var _ ops.Env = Env{}

// Config is the cluster file.
func (e Env) Config() *configs.Config { return e.s.cfg }

// Self is this node.
func (e Env) Self() string { return e.s.self }

// Ledger is this node's view of the ledger (it follows a forced
// failover's new store).
func (e Env) Ledger() ledger.Store { return e.s.ledger }

// Client reaches node's fenced; this node's own through the in-process
// loopback.
func (e Env) Client(node string) api.Client { return e.s.client(node) }

// ForceNewCluster forks the ledger to this node alone.
func (e Env) ForceNewCluster(ctx context.Context) error { return e.s.forceNewCluster(ctx) }
