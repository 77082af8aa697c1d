package member_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mhcodi/mhcodi/configs"
	fapi "github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/member"
	"github.com/mhcodi/mhcodi/fencing/member/membertest"
)

func put(t *testing.T, m *member.Member, k, v string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := m.Client().Put(ctx, k, v)
	return err
}

func get(m *member.Member, k string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := m.Client().Get(ctx, k)
	if err != nil {
		return "", err
	}
	if len(r.Kvs) == 0 {
		return "", nil
	}
	return string(r.Kvs[0].Value), nil
}

func ready(t *testing.T, m *member.Member) {
	t.Helper()
	select {
	case <-m.Ready():
	case <-time.After(20 * time.Second):
		t.Fatalf("%s not ready", m.Name())
	}
}

func TestURLsAndInitialCluster(t *testing.T) {
	cfg := membertest.Config(t, membertest.Node{Name: "node-a", IP: "127.0.0.41"}, membertest.Node{Name: "node-b", IP: "127.0.0.42"},
		membertest.Node{Name: "wit", Role: configs.RoleWitness, IP: "127.0.0.43"})
	assert.Equal(t, "node-a=https://127.0.0.41:2380,node-b=https://127.0.0.42:2380,wit=https://127.0.0.43:2380", member.InitialCluster(cfg, 2380))
	assert.Equal(t, []string{"https://127.0.0.41:2379", "https://127.0.0.42:2379", "https://127.0.0.43:2379"}, member.ClientURLs(cfg, 2379))
	_, err := member.Start(context.Background(), member.Options{Config: cfg, Node: "node-z"})
	assert.ErrorContains(t, err, `node "node-z" is not in the cluster file`)
}

// Three members (two storage nodes and a witness): writes through one are
// read through another; with two of them stopped the last cannot read
// linearizably any more.
func TestThreeMembersLoseQuorum(t *testing.T) {
	cfg := membertest.Config(t, membertest.Node{Name: "node-a", IP: "127.0.0.41"}, membertest.Node{Name: "node-b", IP: "127.0.0.42"},
		membertest.Node{Name: "wit", Role: configs.RoleWitness, IP: "127.0.0.43"})
	ms := membertest.StartAll(t, cfg)

	require.NoError(t, put(t, ms["node-a"], "k", "v1"))
	v, err := get(ms["wit"], "k", 2*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "v1", v)

	// One down: still a majority.
	ms["wit"].Stop()
	require.NoError(t, put(t, ms["node-b"], "k", "v2"))

	ms["node-b"].Stop()
	_, err = get(ms["node-a"], "k", time.Second)
	require.Error(t, err, "a lone member of three must not answer a linearizable read")
	// Its data is still there for a serializable read.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, err := ms["node-a"].Client().Get(ctx, "k", clientv3.WithSerializable())
	require.NoError(t, err)
	assert.Equal(t, "v2", string(r.Kvs[0].Value))
}

// The classic two-host setup: node-b is down and the operator forces a
// failover, forking the ledger to node-a. node-b comes back with its old
// data, learns it was removed, moves its data aside and rejoins.
func TestForkAndRejoin(t *testing.T) {
	cfg := membertest.Config(t, membertest.Nodes(2)...)
	ms := membertest.StartAll(t, cfg)
	a, b := ms["node-a"], ms["node-b"]
	require.NoError(t, put(t, a, "before", "1"))
	ob := membertest.Options(t, cfg, "node-b")
	b.Stop()

	_, err := get(a, "before", time.Second)
	require.Error(t, err, "one of two members has no quorum")

	require.NoError(t, a.Fork(context.Background()))
	ready(t, a)
	require.Eventually(t, func() bool { return put(t, a, "after", "2") == nil }, 10*time.Second, 100*time.Millisecond)

	// node-b restarts on its old data: the survivor turns it away.
	b2 := membertest.Start(t, ob)
	select {
	case <-b2.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("node-b did not find it was removed")
	}
	require.True(t, b2.Removed(), "%v", b2.Err())
	require.ErrorIs(t, b2.Err(), member.ErrRemoved)

	initial, err := a.AddMember(context.Background(), "node-b", b2.PeerURL())
	require.NoError(t, err)
	assert.Contains(t, initial, "node-a=https://127.0.0.41:")
	assert.Contains(t, initial, "node-b="+b2.PeerURL())
	require.NoError(t, b2.Rejoin(context.Background(), api(initial)))
	ready(t, b2)
	_, err = os.Stat(ob.DataDir + ".old")
	require.NoError(t, err, "the old data is kept aside")

	require.Eventually(t, func() bool {
		v, err := get(b2, "after", time.Second)
		return err == nil && v == "2"
	}, 20*time.Second, 200*time.Millisecond, "node-b sees what node-a wrote after the fork")

	// Promoted to a voter: then a write needs both, and both are up.
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		l, err := a.Client().MemberList(ctx)
		if err != nil || len(l.Members) != 2 {
			return false
		}
		for _, m := range l.Members {
			if m.IsLearner {
				return false
			}
		}
		return true
	}, 20*time.Second, 200*time.Millisecond)
	require.NoError(t, put(t, b2, "joined", "3"))

	// A join cannot take another member's place.
	_, err = b2.AddMember(context.Background(), "node-b", a.PeerURL())
	require.ErrorContains(t, err, "is the peer URL of member node-a")
}

func TestResetDataKeepsOneBackup(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	bak, err := member.ResetData(dir)
	require.NoError(t, err)
	assert.Empty(t, bak)
	for i, content := range []string{"first", "second"} {
		require.NoError(t, os.MkdirAll(dir, 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), []byte(content), 0o600))
		bak, err = member.ResetData(dir)
		require.NoError(t, err, i)
		assert.NoDirExists(t, dir)
	}
	b, err := os.ReadFile(filepath.Join(bak, "f"))
	require.NoError(t, err)
	assert.Equal(t, "second", string(b))
}

func api(initial string) fapi.JoinResponse { return fapi.JoinResponse{InitialCluster: initial} }
