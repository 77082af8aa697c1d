package api

import "context"

// Client talks to one node's fenced: over HTTPS with the cluster's
// certificates (another node), or over the root-only unix socket (the
// local CLI). Every method fails fast when the node does not answer
// within the context's deadline.
type Client interface {
	Node() string
	NodeStatus(ctx context.Context) (NodeStatus, error)
	Ledger(ctx context.Context) (LedgerResponse, error)
	Fence(ctx context.Context, r FenceRequest) error
	Start(ctx context.Context, guest string, r StartRequest) error
	Stop(ctx context.Context, guest string, r StopRequest) error
	Destroy(ctx context.Context, guest string) error
	// Op runs an operation on the node and calls progress for every line;
	// the error is the operation's (Progress.Err of the last line).
	Op(ctx context.Context, r OpRequest, progress func(Progress)) error
	Join(ctx context.Context, r JoinRequest) (JoinResponse, error)
}
