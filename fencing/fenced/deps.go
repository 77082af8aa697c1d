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
	"github.com/mhcodi/mhcodi/targetd"
)

// Member is this node's embedded etcd member, as fenced uses it
// (fencing/member; nil with an external etcd).
type Member interface {
	// Removed is closed when the member learns that the cluster no
	// longer counts it (a forced failover forked the ledger away).
	Removed() <-chan struct{}
	// AddMember adds name at peerURL to the cluster and says how the
	// joiner must start.
	AddMember(ctx context.Context, name, peerURL string) (api.JoinResponse, error)
	// PeerURL is this member's peer URL, for a Join request.
	PeerURL() string
	// ResetData removes the member's data directory (before a rejoin).
	ResetData() error
	Stop() error
}

// LedgerOptions say how to (re)start the ledger.
type LedgerOptions struct {
	// ForceNewCluster forks the ledger to this node alone.
	ForceNewCluster bool
	// Join starts a member with an empty data directory as a new member
	// of the cluster a peer described.
	Join *api.JoinResponse
}

// LedgerStarter starts this node's member (if any) and the Store on it.
type LedgerStarter interface {
	StartLedger(ctx context.Context, o LedgerOptions) (Member, ledger.Store, error)
}

// LedgerStarterFunc adapts a function to LedgerStarter.
type LedgerStarterFunc func(ctx context.Context, o LedgerOptions) (Member, ledger.Store, error)

// StartLedger calls f.
func (f LedgerStarterFunc) StartLedger(ctx context.Context, o LedgerOptions) (Member, ledger.Store, error) {
	return f(ctx, o)
}

// Operator carries out operations (fencing/ops.Operator).
type Operator interface {
	Run(ctx context.Context, r api.OpRequest, progress func(api.Progress)) error
	AutoFailover(ctx context.Context, guest string) error
}

// TargetControl is the local targetd's control API (targetd.ControlClient).
type TargetControl interface {
	Exports(ctx context.Context) ([]targetd.ExportInfo, error)
	Fence(ctx context.Context, req targetd.FenceRequest) (targetd.FenceResult, error)
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
