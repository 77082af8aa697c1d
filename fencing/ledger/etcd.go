package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mhcodi/mhcodi/naming"
)

// Errors of Hold besides those of every call.
var (
	// ErrNotOwner: the record does not name this node owner, so it may
	// not hold the guest's lease.
	ErrNotOwner = errors.New("ledger: this node does not own the guest")
	// ErrHeld: another node holds the guest's lease.
	ErrHeld = errors.New("ledger: another node holds the guest's lease")
)

// opTimeout bounds every etcd call: without quorum etcd does not answer
// at all, and a caller deciding whether to fence must not wait longer
// than it has.
const opTimeout = 2 * time.Second

// retryEvery is how often the lease loop retries without quorum.
const retryEvery = 500 * time.Millisecond

// Etcd is the Store on etcd. Keys, under /mhcodi/<cluster>/:
//
//	guests/<guest>  the Record as JSON
//	leases/<guest>  the holding node's name, attached to that node's etcd
//	                lease (TTL timeouts.lease_ttl)
//
// One etcd lease per node carries all the guest keys it holds, so one
// keepalive stream proves the node alive for all of them.
type Etcd struct {
	cli    *clientv3.Client
	prefix string
	node   string
	ttl    time.Duration
	log    *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	lease   clientv3.LeaseID // 0 while the node has none
	renewed time.Time
	// held are the guests this node holds (Hold, not Dropped since):
	// what a new lease re-holds after the old one expired.
	held map[string]bool
}

var _ Store = (*Etcd)(nil)

// NewEtcd returns the Store of node on cli, for cluster's keys. It starts
// the node's lease in the background (it does not wait for quorum).
// Close stops it; cli stays the caller's to close.
func NewEtcd(cli *clientv3.Client, cluster, node string, ttl time.Duration, log *slog.Logger) (*Etcd, error) {
	if err := errors.Join(label("cluster", cluster), label("node", node)); err != nil {
		return nil, err
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("ledger: lease TTL %v is below etcd's one-second granularity", ttl)
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Etcd{
		cli:    cli,
		prefix: "/mhcodi/" + cluster + "/",
		node:   node,
		ttl:    ttl,
		log:    log.With("component", "ledger"),
		held:   map[string]bool{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.leaseLoop()
	return s, nil
}

func (s *Etcd) guestKey(g string) string { return s.prefix + "guests/" + g }
func (s *Etcd) leaseKey(g string) string { return s.prefix + "leases/" + g }

// Close stops the keepalive. It does not revoke the lease: guests this
// node runs may still be running, and other nodes must not see them
// unheld before the TTL has passed (by then fenced has destroyed them or
// the watchdog has reset the host).
func (s *Etcd) Close() error {
	s.cancel()
	s.wg.Wait()
	return nil
}

// opCtx bounds one call by opTimeout.
func (s *Etcd) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, opTimeout)
}

// noQuorum turns what etcd says when it cannot reach a majority into
// ErrNoQuorum; a caller's own cancellation stays what it is.
func noQuorum(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return err
	}
	e := rpctypes.Error(err)
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(e, rpctypes.ErrNoLeader),
		errors.Is(e, rpctypes.ErrTimeout),
		errors.Is(e, rpctypes.ErrTimeoutDueToLeaderFail),
		errors.Is(e, rpctypes.ErrTimeoutDueToConnectionLost),
		errors.Is(e, rpctypes.ErrTimeoutWaitAppliedIndex),
		errors.Is(e, rpctypes.ErrLeaderChanged),
		errors.Is(e, rpctypes.ErrStopped),
		status.Code(err) == codes.Unavailable,
		status.Code(err) == codes.DeadlineExceeded:
		return fmt.Errorf("%w: %v", ErrNoQuorum, err)
	}
	return err
}

// read gets guest's record and lease key in one consistent snapshot.
func (s *Etcd) read(ctx context.Context, guest string) (rec Record, recRev int64, holder string, leaseRev int64, err error) {
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(s.guestKey(guest)), clientv3.OpGet(s.leaseKey(guest))).Commit()
	if err != nil {
		return Record{}, 0, "", 0, noQuorum(ctx, err)
	}
	rec = Record{Guest: guest}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		if err := json.Unmarshal(kvs[0].Value, &rec); err != nil {
			return Record{}, 0, "", 0, fmt.Errorf("ledger: record of %s: %w", guest, err)
		}
		recRev = kvs[0].ModRevision
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		holder, leaseRev = string(kvs[0].Value), kvs[0].ModRevision
	}
	return rec, recRev, holder, leaseRev, nil
}

// Get returns guest's record.
func (s *Etcd) Get(ctx context.Context, guest string) (Record, error) {
	if err := label("guest", guest); err != nil {
		return Record{}, err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	rec, rev, _, _, err := s.read(ctx, guest)
	if err != nil {
		return Record{}, fmt.Errorf("ledger: get %s: %w", guest, err)
	}
	if rev == 0 {
		return Record{}, fmt.Errorf("%w: %s", ErrNotFound, guest)
	}
	return rec, nil
}

// List returns every record, by guest name.
func (s *Etcd) List(ctx context.Context) ([]Record, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.prefix+"guests/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("ledger: list: %w", noQuorum(ctx, err))
	}
	out := make([]Record, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var r Record
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return nil, fmt.Errorf("ledger: record %s: %w", kv.Key, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Update reads, lets fn decide, and writes only if the record's revision
// is still the one read (or it is still absent).
func (s *Etcd) Update(ctx context.Context, guest string, fn func(r *Record) error) (Record, error) {
	if err := label("guest", guest); err != nil {
		return Record{}, err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	rec, rev, _, _, err := s.read(ctx, guest)
	if err != nil {
		return Record{}, fmt.Errorf("ledger: update %s: %w", guest, err)
	}
	if err := fn(&rec); err != nil {
		return Record{}, err
	}
	if rec.Guest != guest {
		return Record{}, fmt.Errorf("%w: update of %s renamed it to %q", ErrInvalid, guest, rec.Guest)
	}
	if err := Validate(rec); err != nil {
		return Record{}, fmt.Errorf("ledger: update %s: %w", guest, err)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return Record{}, fmt.Errorf("ledger: update %s: %w", guest, err)
	}
	key := s.guestKey(guest)
	// An absent key has ModRevision 0 in a compare, so one compare
	// covers "unchanged" and "still absent".
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return Record{}, fmt.Errorf("ledger: update %s: %w", guest, noQuorum(ctx, err))
	}
	if !resp.Succeeded {
		return Record{}, fmt.Errorf("%w: %s", ErrConflict, guest)
	}
	return rec, nil
}

// Delete removes guest's record (and its lease key, which would name a
// holder of nothing).
func (s *Etcd) Delete(ctx context.Context, guest string) error {
	if err := label("guest", guest); err != nil {
		return err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpDelete(s.guestKey(guest)), clientv3.OpDelete(s.leaseKey(guest))).Commit()
	if err != nil {
		return fmt.Errorf("ledger: delete %s: %w", guest, noQuorum(ctx, err))
	}
	if resp.Responses[0].GetResponseDeleteRange().Deleted == 0 {
		return fmt.Errorf("%w: %s", ErrNotFound, guest)
	}
	s.mu.Lock()
	delete(s.held, guest)
	s.mu.Unlock()
	return nil
}

// Hold puts guest's lease key on this node's lease, in a transaction that
// checks that the record names this node owner and that no other node
// holds the key, both as read: a node holds only what it owns, and never
// over another node's live lease. It waits (within ctx) for the node's
// lease when there is none yet.
func (s *Etcd) Hold(ctx context.Context, guest string) error {
	if err := label("guest", guest); err != nil {
		return err
	}
	id, err := s.waitLease(ctx)
	if err != nil {
		return fmt.Errorf("ledger: hold %s: %w", guest, err)
	}
	if err := s.hold(ctx, guest, id); err != nil {
		return fmt.Errorf("ledger: hold %s: %w", guest, err)
	}
	s.mu.Lock()
	s.held[guest] = true
	s.mu.Unlock()
	return nil
}

func (s *Etcd) hold(ctx context.Context, guest string, id clientv3.LeaseID) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	rec, recRev, holder, leaseRev, err := s.read(ctx, guest)
	if err != nil {
		return err
	}
	if recRev == 0 {
		return ErrNotFound
	}
	if rec.Owner != s.node {
		return fmt.Errorf("%w (the ledger names %q, epoch %d)", ErrNotOwner, rec.Owner, rec.Epoch)
	}
	if holder != "" && holder != s.node {
		return fmt.Errorf("%w (%s)", ErrHeld, holder)
	}
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(s.guestKey(guest)), "=", recRev),
		clientv3.Compare(clientv3.ModRevision(s.leaseKey(guest)), "=", leaseRev),
	).Then(clientv3.OpPut(s.leaseKey(guest), s.node, clientv3.WithLease(id))).Commit()
	if err != nil {
		return noQuorum(ctx, err)
	}
	if !resp.Succeeded {
		return ErrConflict
	}
	return nil
}

// Drop deletes guest's lease key if this node holds it.
func (s *Etcd) Drop(ctx context.Context, guest string) error {
	if err := label("guest", guest); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.held, guest)
	s.mu.Unlock()
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	key := s.leaseKey(guest)
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(key), "=", s.node)).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return fmt.Errorf("ledger: drop %s: %w", guest, noQuorum(ctx, err))
	}
	return nil
}

// Holder returns the node holding guest's lease, "" when none does.
func (s *Etcd) Holder(ctx context.Context, guest string) (string, error) {
	if err := label("guest", guest); err != nil {
		return "", err
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.leaseKey(guest))
	if err != nil {
		return "", fmt.Errorf("ledger: holder of %s: %w", guest, noQuorum(ctx, err))
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// LastRenewed is when etcd last confirmed this node's lease (granted or
// renewed); zero before the first grant.
func (s *Etcd) LastRenewed() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.renewed
}

// Quorum does a linearizable read, which needs a majority.
func (s *Etcd) Quorum(ctx context.Context) error {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	if _, err := s.cli.Get(ctx, s.prefix+"quorum"); err != nil {
		return fmt.Errorf("ledger: %w", noQuorum(ctx, err))
	}
	return nil
}

// Watch sends the guest of every change of a record or lease key. A
// watch that breaks (no leader, compaction) is resumed after the last
// revision seen; the channel closes when ctx ends or the Store closes.
// A slow reader delays the watch, it loses nothing.
func (s *Etcd) Watch(ctx context.Context) <-chan string {
	out := make(chan string, 64)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	go func() {
		defer close(out)
		defer stop()
		defer cancel()
		var next int64 // 0: from now
		for ctx.Err() == nil {
			opts := []clientv3.OpOption{clientv3.WithPrefix()}
			if next > 0 {
				opts = append(opts, clientv3.WithRev(next))
			}
			// RequireLeader: a member cut off from the others ends the
			// watch instead of staying silent while the others change
			// the ledger.
			wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			for wr := range s.cli.Watch(wctx, s.prefix, opts...) {
				if err := wr.Err(); err != nil {
					if errors.Is(err, rpctypes.ErrCompacted) {
						next = 0
					}
					s.log.Debug("ledger watch broke; resuming", "err", err)
					break
				}
				for _, ev := range wr.Events {
					next = ev.Kv.ModRevision + 1
					g := s.guestOf(string(ev.Kv.Key))
					if g == "" {
						continue
					}
					select {
					case out <- g:
					case <-ctx.Done():
						wcancel()
						return
					}
				}
			}
			wcancel()
			select {
			case <-ctx.Done():
			case <-time.After(retryEvery):
			}
		}
	}()
	return out
}

// guestOf returns the guest of a record or lease key, "" for other keys.
func (s *Etcd) guestOf(key string) string {
	rest, ok := strings.CutPrefix(key, s.prefix)
	if !ok {
		return ""
	}
	for _, p := range []string{"guests/", "leases/"} {
		if g, ok := strings.CutPrefix(rest, p); ok && naming.ValidLabel(g) == nil {
			return g
		}
	}
	return ""
}

// waitLease returns the node's lease, waiting for the lease loop to get
// one when there is none.
func (s *Etcd) waitLease(ctx context.Context) (clientv3.LeaseID, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	for {
		s.mu.Lock()
		id := s.lease
		s.mu.Unlock()
		if id != 0 {
			return id, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: this node has no etcd lease yet", ErrNoQuorum)
		case <-s.ctx.Done():
			return 0, errors.New("ledger: closed")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// leaseLoop keeps the node's lease: it grants one, keeps it alive, and
// when the keepalive stream ends finds out whether the lease is really
// gone before granting another.
//
// Why not simply grant a new lease whenever the stream ends: the client
// ends it after a TTL without answers, which is also what a quorum loss
// looks like, and etcd does not expire leases without a leader (a new
// leader extends them all). The old lease, and the keys on it, may well
// be alive; a new one would leave them to expire later while this node
// believes it holds them on the new one.
//
// When the lease is really gone, its keys went with it, and another node
// may have acted on that: seen the guest unheld, claimed it (a new epoch)
// and started it. So the keys are put back only by the transaction of
// Hold, which requires the record, as read, to still name this node owner
// and no other node to hold the key; the epoch is untouched, so a claim
// made meanwhile, or racing with it, wins (its compare of the record
// revision is unaffected by a lease key, and ours fails on its change).
// A guest it cannot hold again is forgotten, and logged.
func (s *Etcd) leaseLoop() {
	defer s.wg.Done()
	var id clientv3.LeaseID
	rehold := false
	for s.ctx.Err() == nil {
		if id == 0 {
			var err error
			if id, err = s.grant(); err != nil {
				s.log.Debug("cannot grant this node's lease yet", "err", err)
				s.sleep()
				continue
			}
			if rehold {
				s.reholdAll(id)
				rehold = false
			}
		}
		s.keepAlive(id)
		if s.ctx.Err() != nil {
			return
		}
		// etcd says the lease is gone (expired or revoked); make sure.
		for s.ctx.Err() == nil {
			alive, err := s.leaseAlive(id)
			if err != nil {
				s.sleep()
				continue
			}
			if !alive {
				s.log.Warn("this node's etcd lease expired; its guest keys went with it", "lease", fmt.Sprintf("%x", int64(id)))
				s.mu.Lock()
				s.lease = 0
				s.mu.Unlock()
				id, rehold = 0, true
			}
			break
		}
	}
}

func (s *Etcd) sleep() {
	select {
	case <-s.ctx.Done():
	case <-time.After(retryEvery):
	}
}

func (s *Etcd) grant() (clientv3.LeaseID, error) {
	ctx, cancel := s.opCtx(s.ctx)
	defer cancel()
	sent := time.Now() // the lease runs from later than this
	resp, err := s.cli.Grant(ctx, int64(math.Ceil(s.ttl.Seconds())))
	if err != nil {
		return 0, noQuorum(ctx, err)
	}
	s.mu.Lock()
	s.lease = resp.ID
	s.renewed = sent
	s.mu.Unlock()
	s.log.Info("granted this node's etcd lease", "lease", fmt.Sprintf("%x", int64(resp.ID)), "ttl", s.ttl)
	return resp.ID, nil
}

// renewEvery is how often keepAlive renews the node's lease, and
// renewTimeout how long one renewal may take. etcd renews a lease on its
// leader only: a follower forwards the renewal and waits for the answer
// up to its request timeout (5 s + two election timeouts). With
// clientv3's KeepAlive stream one renewal stuck on a leader that hangs
// blocks the stream that long, and every node's lease then looked older
// than lease_ttl − lease_margin: healthy nodes destroyed their guests
// because another node froze (found by TestFencingFrozenOwner). Short
// single renewals, retried, reach the new leader as soon as there is one.
func renewTiming(ttl time.Duration) (every, timeout time.Duration) {
	every = min(max(ttl/10, 200*time.Millisecond), time.Second)
	return every, 2 * every
}

// keepAlive renews id every renewEvery until etcd says the lease is gone
// (expired or revoked) or the Store closes. A renewal that fails for any
// other reason (no leader yet, no quorum) is simply tried again: the lease
// then ages, and the LeaseKeeper acts on its age.
func (s *Etcd) keepAlive(id clientv3.LeaseID) {
	every, timeout := renewTiming(s.ttl)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		// The lease runs from when the leader renewed it, which is after
		// this moment: counting from here is on the safe side.
		sent := time.Now()
		ctx, cancel := context.WithTimeout(s.ctx, timeout)
		resp, err := s.cli.KeepAliveOnce(ctx, id)
		cancel()
		switch {
		case err == nil && resp.TTL > 0:
			s.mu.Lock()
			if s.lease == id && sent.After(s.renewed) {
				s.renewed = sent
			}
			s.mu.Unlock()
		case err == nil || errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseNotFound):
			return
		case s.ctx.Err() != nil:
			return
		default:
			s.log.Debug("lease renewal failed; trying again", "lease", fmt.Sprintf("%x", int64(id)), "err", err)
		}
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// leaseAlive asks etcd whether id still exists.
func (s *Etcd) leaseAlive(id clientv3.LeaseID) (bool, error) {
	ctx, cancel := s.opCtx(s.ctx)
	defer cancel()
	resp, err := s.cli.TimeToLive(ctx, id)
	if err != nil {
		if errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseNotFound) {
			return false, nil
		}
		return false, noQuorum(ctx, err)
	}
	return resp.TTL > 0, nil
}

// reholdAll puts back the keys of the guests this node held, on lease id,
// where Hold's transaction still allows it.
func (s *Etcd) reholdAll(id clientv3.LeaseID) {
	s.mu.Lock()
	guests := make([]string, 0, len(s.held))
	for g := range s.held {
		guests = append(guests, g)
	}
	s.mu.Unlock()
	for _, g := range guests {
		err := s.hold(s.ctx, g, id)
		s.mu.Lock()
		if err == nil || !s.held[g] {
			s.mu.Unlock()
			if err == nil {
				s.log.Info("holding a guest again on the new lease", "guest", g)
			}
			continue
		}
		if errors.Is(err, ErrNoQuorum) {
			// Not an answer: keep it for the next lease.
			s.mu.Unlock()
			s.log.Warn("cannot hold a guest again yet", "guest", g, "err", err)
			continue
		}
		delete(s.held, g)
		s.mu.Unlock()
		s.log.Warn("not holding a guest again: the ledger moved on while this node's lease was gone", "guest", g, "err", err)
	}
}
