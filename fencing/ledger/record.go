// Package ledger is the cluster's ownership ledger: one record per guest
// (owner node, epoch, desired state, stale legs) kept in etcd, changed only
// by transactions that compare the epoch they read, and one lease per
// running guest that its owner renews.
//
// The record transitions are pure functions (Claim, Release, …) over
// Record values; Store is the etcd I/O around them.
package ledger

import (
	"errors"
	"time"
)

// Desired states of a guest.
const (
	DesiredRunning = "running"
	DesiredStopped = "stopped"
)

// Record is a guest's line in the ledger. The Epoch is the fencing token:
// it grows by one with every change of owner, targetd accepts a guest's
// LUNs only from the owner of the newest epoch it was told, and a leg
// marked Stale at an epoch may hold writes of a runner older than that
// epoch (it is wiped and resynced in full).
type Record struct {
	Guest   string `json:"guest"`
	Owner   string `json:"owner"` // node; "" when never started
	Epoch   uint64 `json:"epoch"`
	Desired string `json:"desired"` // DesiredRunning or DesiredStopped
	// Stale maps a leg's node to the epoch at which it was marked stale;
	// cleared when the guest reports the leg resynced.
	Stale   map[string]uint64 `json:"stale,omitempty"`
	Updated time.Time         `json:"updated"`
	// By says which node made the last change, and Why in a few words
	// (start, failover, forced failover, evacuate, stop…).
	By  string `json:"by"`
	Why string `json:"why"`
}

// Errors of the transitions and of Store.
var (
	// ErrConflict: the record changed since it was read (another
	// transaction won); read again and decide again.
	ErrConflict = errors.New("ledger: the record changed meanwhile")
	// ErrNotFound: no record for the guest.
	ErrNotFound = errors.New("ledger: no such guest")
	// ErrNoQuorum: the ledger cannot be written (etcd has no quorum).
	ErrNoQuorum = errors.New("ledger: no quorum")
)

// StaleLegs lists the nodes whose legs are stale.
func (r Record) StaleLegs() map[string]bool {
	out := map[string]bool{}
	for n := range r.Stale {
		out[n] = true
	}
	return out
}
