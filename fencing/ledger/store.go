package ledger

import (
	"context"
	"time"
)

// Store is the ledger's I/O: etcd (embedded members or an external
// cluster). Every write is one transaction that compares the revision of
// the record it read, so two nodes deciding at once cannot both win.
type Store interface {
	// Get returns a guest's record (ErrNotFound when there is none).
	Get(ctx context.Context, guest string) (Record, error)
	// List returns every record.
	List(ctx context.Context) ([]Record, error)
	// Update reads guest's record (a zero Record with Guest set when
	// there is none), lets fn change it, and writes it back only if
	// nobody changed it meanwhile (ErrConflict otherwise; fn's error is
	// returned as is and nothing is written). It returns what was
	// written.
	Update(ctx context.Context, guest string, fn func(r *Record) error) (Record, error)
	// Delete removes a guest's record (mhcodi guest destroy --purge).
	Delete(ctx context.Context, guest string) error

	// Hold puts guest's lease key, owned by this node and attached to
	// the node's etcd lease (TTL timeouts.lease_ttl), which the Store
	// keeps alive in the background; Drop deletes it.
	Hold(ctx context.Context, guest string) error
	Drop(ctx context.Context, guest string) error
	// Holder returns the node holding guest's lease, "" when the lease
	// expired or was never taken.
	Holder(ctx context.Context, guest string) (string, error)
	// LeaseHealthy reports when this node's lease was last renewed: the
	// owner destroys its guests before LastRenewed+TTL-margin passes.
	LastRenewed() time.Time

	// Watch sends the guest's name whenever a record or a lease key
	// changes (lease expiry included), until ctx ends.
	Watch(ctx context.Context) <-chan string
	// Quorum reports whether the ledger can be written now (a linearizable
	// read succeeded within a short timeout).
	Quorum(ctx context.Context) error
	Close() error
}
