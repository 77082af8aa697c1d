package ledger_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/fencing/member"
	"github.com/mhcodi/mhcodi/fencing/member/membertest"
)

const ttl = 2 * time.Second

func oneMember(t *testing.T) *member.Member {
	t.Helper()
	cfg := membertest.Config(t, membertest.Nodes(1)...)
	return membertest.StartAll(t, cfg)["node-a"]
}

func store(t *testing.T, cli *clientv3.Client, node string) *ledger.Etcd {
	t.Helper()
	s, err := ledger.NewEtcd(cli, "test", node, ttl, membertest.Logger(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

func claim(t *testing.T, s ledger.Store, guest, owner string) ledger.Record {
	t.Helper()
	r, err := s.Update(ctx(t), guest, func(r *ledger.Record) error {
		return ledger.Claim(r, owner, owner, "start", nil, time.Now())
	})
	require.NoError(t, err)
	return r
}

func TestRecordsRoundTrip(t *testing.T) {
	m := oneMember(t)
	s := store(t, m.Client(), "node-a")

	_, err := s.Get(ctx(t), "web1")
	require.ErrorIs(t, err, ledger.ErrNotFound)

	boom := errors.New("no")
	_, err = s.Update(ctx(t), "web1", func(r *ledger.Record) error {
		assert.Equal(t, ledger.Record{Guest: "web1"}, *r, "an absent record reads as zero with its name")
		return boom
	})
	require.ErrorIs(t, err, boom)
	_, err = s.Update(ctx(t), "web1", func(r *ledger.Record) error { return nil })
	require.ErrorIs(t, err, ledger.ErrInvalid, "a record without a desired state is not written")

	w := claim(t, s, "web1", "node-a")
	assert.Equal(t, uint64(1), w.Epoch)
	got, err := s.Get(ctx(t), "web1")
	require.NoError(t, err)
	assert.Equal(t, w.Owner, got.Owner)
	assert.Equal(t, w.Epoch, got.Epoch)
	assert.True(t, w.Updated.Equal(got.Updated))

	claim(t, s, "db1", "node-b")
	l, err := s.List(ctx(t))
	require.NoError(t, err)
	require.Len(t, l, 2)
	assert.Equal(t, "db1", l[0].Guest)
	assert.Equal(t, "web1", l[1].Guest)

	require.NoError(t, s.Delete(ctx(t), "db1"))
	require.ErrorIs(t, s.Delete(ctx(t), "db1"), ledger.ErrNotFound)
	_, err = s.Get(ctx(t), "Bad Name")
	require.ErrorIs(t, err, ledger.ErrInvalid)
	require.NoError(t, s.Quorum(ctx(t)))
}

// Two nodes decide at once from the same read: one transaction wins, the
// other gets ErrConflict and nothing of it is written.
func TestUpdateRace(t *testing.T) {
	m := oneMember(t)
	a, b := store(t, m.Client(), "node-a"), store(t, m.Client(), "node-b")
	claim(t, a, "web1", "node-a")

	for _, absent := range []bool{false, true} {
		guest := "web1"
		if absent {
			guest = "new1" // both create it
		}
		var read sync.WaitGroup
		read.Add(2)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, s := range []*ledger.Etcd{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.Update(context.Background(), guest, func(r *ledger.Record) error {
					read.Done()
					read.Wait() // both have read before either writes
					owner := []string{"node-a", "node-b"}[i]
					return ledger.Claim(r, owner, owner, "failover", nil, time.Now())
				})
			}()
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			if err == nil {
				won++
			} else {
				require.ErrorIs(t, err, ledger.ErrConflict)
			}
		}
		require.Equal(t, 1, won, "%v", errs)
		r, err := a.Get(ctx(t), guest)
		require.NoError(t, err)
		if absent {
			assert.Equal(t, uint64(1), r.Epoch)
		} else {
			assert.Equal(t, uint64(2), r.Epoch)
		}
	}
}

// The owner holds its guest's lease; another node may not; when the
// owner's keepalive stops (its Store closed) the key expires after the
// TTL and a watcher hears of it.
func TestLeaseHoldExpiryAndWatch(t *testing.T) {
	m := oneMember(t)
	a := store(t, m.Client(), "node-a")
	b := store(t, m.Client(), "node-b")
	claim(t, a, "web1", "node-a")

	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	events := b.Watch(wctx)

	require.NoError(t, a.Hold(ctx(t), "web1"))
	require.NoError(t, a.Hold(ctx(t), "web1"), "holding again is harmless")
	h, err := b.Holder(ctx(t), "web1")
	require.NoError(t, err)
	assert.Equal(t, "node-a", h)
	require.ErrorIs(t, b.Hold(ctx(t), "web1"), ledger.ErrNotOwner)
	require.ErrorIs(t, a.Hold(ctx(t), "nope"), ledger.ErrNotFound)
	waitGuest(t, events, "web1", 3*time.Second)

	// Renewals keep coming.
	first := a.LastRenewed()
	require.False(t, first.IsZero())
	require.Eventually(t, func() bool { return a.LastRenewed().After(first) }, 3*time.Second, 50*time.Millisecond)

	// Lasting beyond a TTL while renewed.
	time.Sleep(ttl + 500*time.Millisecond)
	h, err = b.Holder(ctx(t), "web1")
	require.NoError(t, err)
	assert.Equal(t, "node-a", h)

	drain(events)
	start := time.Now()
	require.NoError(t, a.Close())
	waitGuest(t, events, "web1", 3*ttl)
	took := time.Since(start)
	h, err = b.Holder(ctx(t), "web1")
	require.NoError(t, err)
	assert.Empty(t, h)
	assert.GreaterOrEqual(t, took, ttl-time.Second, "expired only after about a TTL")
	t.Logf("lease key expired %v after the keepalive stopped (TTL %v)", took, ttl)

	// Drop by a non-holder does nothing; by the holder it deletes.
	c := store(t, m.Client(), "node-c")
	claim(t, c, "db1", "node-c")
	require.NoError(t, c.Hold(ctx(t), "db1"))
	require.NoError(t, b.Drop(ctx(t), "db1"))
	h, _ = b.Holder(ctx(t), "db1")
	assert.Equal(t, "node-c", h)
	require.NoError(t, c.Drop(ctx(t), "db1"))
	h, _ = b.Holder(ctx(t), "db1")
	assert.Empty(t, h)
}

func drain(ch <-chan string) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func waitGuest(t *testing.T, ch <-chan string, guest string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case g, ok := <-ch:
			require.True(t, ok, "watch closed")
			if g == guest {
				return
			}
		case <-deadline:
			t.Fatalf("no event for %s within %v", guest, within)
		}
	}
}

// The node's etcd lease is lost (revoked here, as an expiry would): the
// Store grants a new one and holds again only what the ledger still lets
// it hold: not a guest another node claimed meanwhile.
func TestReholdAfterLeaseLoss(t *testing.T) {
	m := oneMember(t)
	cli := m.Client()
	a, b := store(t, cli, "node-a"), store(t, cli, "node-b")
	claim(t, a, "web1", "node-a")
	claim(t, a, "db1", "node-a")
	require.NoError(t, a.Hold(ctx(t), "web1"))
	require.NoError(t, a.Hold(ctx(t), "db1"))

	resp, err := cli.Get(ctx(t), "/mhcodi/test/leases/web1")
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	old := clientv3.LeaseID(resp.Kvs[0].Lease)

	// node-b takes db1 while node-a's lease is gone.
	_, err = cli.Revoke(ctx(t), old)
	require.NoError(t, err)
	claim(t, b, "db1", "node-b")

	require.Eventually(t, func() bool {
		r, err := cli.Get(context.Background(), "/mhcodi/test/leases/web1")
		return err == nil && len(r.Kvs) == 1 && clientv3.LeaseID(r.Kvs[0].Lease) != old && string(r.Kvs[0].Value) == "node-a"
	}, 10*time.Second, 100*time.Millisecond, "web1 held again on a new lease")
	h, err := a.Holder(ctx(t), "db1")
	require.NoError(t, err)
	assert.Empty(t, h, "db1 was claimed by node-b meanwhile; node-a must not hold it again")
	require.NoError(t, b.Hold(ctx(t), "db1"))
}

// Three members; the ledger on node-a loses quorum when the two others
// stop, and says so within the call's timeout.
func TestNoQuorum(t *testing.T) {
	cfg := membertest.Config(t, membertest.Nodes(3)...)
	ms := membertest.StartAll(t, cfg)
	a := store(t, ms["node-a"].Client(), "node-a")
	claim(t, a, "web1", "node-a")
	require.NoError(t, a.Quorum(ctx(t)))

	ms["node-b"].Stop()
	require.NoError(t, a.Quorum(ctx(t)), "two of three are a majority")
	ms["node-c"].Stop()

	start := time.Now()
	err := a.Quorum(context.Background())
	require.ErrorIs(t, err, ledger.ErrNoQuorum)
	assert.Less(t, time.Since(start), 3*time.Second)
	_, err = a.Update(context.Background(), "web1", func(r *ledger.Record) error {
		return ledger.SetDesired(r, ledger.DesiredStopped, "node-a", "stop", time.Now())
	})
	require.ErrorIs(t, err, ledger.ErrNoQuorum)
	_, err = a.Get(context.Background(), "web1")
	require.ErrorIs(t, err, ledger.ErrNoQuorum)
}
