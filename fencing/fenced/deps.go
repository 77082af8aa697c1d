// Package fenced is mhcodi-fenced: the daemon on every node that keeps
// each guest running on one host only. It serves the fencing API (HTTPS
// with the cluster's certificates between nodes, a root-only unix socket
// for the local CLI), fences this node's legs through targetd, starts and
// stops guests through the hypervisor driver after checking the ledger,
// and runs the loops that enforce the ledger on its own:
//
//   - the monitor destroys a guest running here that the ledger gives to
//     another node (or to this node at another epoch);
//   - the lease keeper (quorum mode) holds a lease per owned guest and
//     destroys every guest here before the lease can expire elsewhere when
//     it cannot renew, with /dev/watchdog as the backup of a hung daemon;
//   - the channel keeper talks to each guest's guestraid and clears a
//     leg's stale mark once the guest has resynced it;
//   - automatic failover (quorum mode, opt-in) and the rejoin of a node
//     whose ledger was forked away by a forced failover.
//
// Each rule is a pure function of what was read (Decide*, LeaseFresh,
// ChooseFailover…); the loops around them do the I/O with an injected
// clock, so the rules are tested without etcd, qemu or targetd.
package fenced

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"time"

	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/targetd/controlapi"
)

// Member is this node's embedded etcd member, as fenced uses it
// (*member.Member; nil with an external etcd). Its client, and so the
// Store on it, stays valid across Fork and Rejoin.
type Member interface {
	// Done is closed when the member's current run ends; Removed then
	// says whether the cluster no longer counts it (a forced failover
	// forked the ledger away), Err why it stopped by itself (nil: on
	// purpose, as Fork and Rejoin restart it in place).
	Done() <-chan struct{}
	Removed() bool
	Err() error
	// AddMember adds name at peerURL to the cluster and returns the
	// --initial-cluster the joiner must start with.
	AddMember(ctx context.Context, name, peerURL string) (string, error)
	// PeerURL is this member's peer URL, for a Join request.
	PeerURL() string
	// Fork restarts the member with --force-new-cluster.
	Fork(ctx context.Context) error
	// Rejoin moves the member's data aside and starts it as a new member
	// of the cluster join describes.
	Rejoin(ctx context.Context, join api.JoinResponse) error
	Stop()
}

// LedgerStarter starts this node's member (nil with an external etcd)
// and the Store on it; the Store is closed before the member is stopped.
type LedgerStarter interface {
	StartLedger(ctx context.Context) (Member, ledger.Store, error)
}

// LedgerStarterFunc adapts a function to LedgerStarter.
type LedgerStarterFunc func(ctx context.Context) (Member, ledger.Store, error)

// StartLedger calls f.
func (f LedgerStarterFunc) StartLedger(ctx context.Context) (Member, ledger.Store, error) {
	return f(ctx)
}

// Operator carries out operations (fencing/ops.Operator).
type Operator interface {
	Run(ctx context.Context, r api.OpRequest, progress func(api.Progress)) error
	AutoFailover(ctx context.Context, guest string) error
}

// TargetControl is the local targetd's control API (controlapi.ControlClient).
type TargetControl interface {
	Exports(ctx context.Context) ([]controlapi.ExportInfo, error)
	Fence(ctx context.Context, req controlapi.FenceRequest) (controlapi.FenceResult, error)
}

// Clock is the time source of the loops; tests pass a fake.
type Clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// PeerNameFunc names the cluster member a verified client certificate
// belongs to (certs.PeerName).
type PeerNameFunc func(cs *tls.ConnectionState) (string, error)

// DefaultPeerName is the common name of the verified client certificate.
// fenced's TLS config has already checked the chain against the cluster's
// CA; the name only says which member it is.
func DefaultPeerName(cs *tls.ConnectionState) (string, error) {
	if cs == nil {
		return "", errors.New("no TLS")
	}
	var leaf *x509.Certificate
	if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
		leaf = cs.VerifiedChains[0][0]
	}
	if leaf == nil {
		return "", errors.New("no verified client certificate")
	}
	if leaf.Subject.CommonName == "" {
		return "", errors.New("client certificate without a common name")
	}
	return leaf.Subject.CommonName, nil
}

// AdminName is the CLI's certificate name.
const AdminName = "admin"
