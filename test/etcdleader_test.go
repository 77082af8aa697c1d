package test

import (
	"context"
	"net"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/mhcodi/mhcodi/fencing/certs"
	"github.com/mhcodi/mhcodi/fencing/member"
	"github.com/mhcodi/mhcodi/test/cluster"
)

// etcdClient is an etcd client of the cluster's ledger for the test, as
// the cluster's admin, that reaches endpoint from inside via's namespace.
func etcdClient(r *fencingRun, via *cluster.Host, endpoint string) *clientv3.Client {
	r.t.Helper()
	tlsCfg, err := certs.ClientTLS(r.c.Config.Security.TLSDir, certs.Admin)
	require.NoError(r.t, err)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		TLS:         tlsCfg,
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return via.DialTCP(ctx, addr)
		})},
	})
	require.NoError(r.t, err)
	r.t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// makeEtcdLeader moves the ledger's Raft leadership to h's member, so that
// a scenario that freezes or cuts h hits the leader, the harder case for
// the other nodes' lease renewals (etcd renews leases on the leader only).
func (r *fencingRun) makeEtcdLeader(ctx context.Context, h *cluster.Host) {
	r.t.Helper()
	endpoint := func(n string) string {
		node, ok := r.c.Config.Node(n)
		require.True(r.t, ok, n)
		u := member.ClientURL(*node, r.c.Config.Fencing.Etcd.ClientPort)
		return u.String()
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cli := etcdClient(r, h, endpoint(h.Name))
	for {
		st, err := cli.Status(ctx, endpoint(h.Name))
		require.NoError(r.t, err)
		self := st.Header.MemberId
		if st.Leader == self {
			r.t.Logf("etcd leader: %s", h.Name)
			return
		}
		members, err := cli.MemberList(ctx)
		require.NoError(r.t, err)
		var leaderURL string
		for _, m := range members.Members {
			if m.ID == st.Leader && len(m.ClientURLs) > 0 {
				leaderURL = m.ClientURLs[0]
			}
		}
		require.NotEmpty(r.t, leaderURL, "no client URL of the leader %x", st.Leader)
		lcli := etcdClient(r, h, leaderURL)
		if _, err := lcli.MoveLeader(ctx, self); err != nil {
			r.t.Logf("moving the etcd leadership to %s: %v (trying again)", h.Name, err)
		}
		_ = lcli.Close()
		select {
		case <-ctx.Done():
			r.t.Fatalf("the etcd leadership did not move to %s: %v", h.Name, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}
