// Package membertest builds small real clusters for tests: a cluster file
// for nodes on loopback addresses (127.0.0.x, free ports), the cluster's
// certificates, and embedded etcd members with fast Raft timing, each
// stopped when the test ends.
package membertest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/certs"
	"github.com/mhcodi/mhcodi/fencing/member"
	"github.com/mhcodi/mhcodi/internal/freeport"
)

// Node is one node of a test cluster.
type Node struct {
	Name string
	Role string // configs.RoleStorage (default) or configs.RoleWitness
	IP   string // a loopback address, e.g. 127.0.0.41
}

// Nodes are n storage nodes node-a, node-b… on 127.0.0.41, .42…
func Nodes(n int) []Node {
	out := make([]Node, n)
	for i := range out {
		out[i] = Node{Name: "node-" + string(rune('a'+i)), IP: "127.0.0." + strconv.Itoa(41+i)}
	}
	return out
}

// Config writes a cluster file for nodes into a temporary directory (state
// under it, certificates in its tls/), with etcd ports free on every
// node's address, and loads it.
func Config(t testing.TB, nodes ...Node) *configs.Config {
	t.Helper()
	dir := t.TempDir()
	client, peer := FreePorts(t, nodes)
	var b strings.Builder
	fmt.Fprintf(&b, "cluster:\n  name: test\n  iqn_prefix: iqn.2026-11.org.example\nnodes:\n")
	for _, n := range nodes {
		role := n.Role
		if role == "" {
			role = configs.RoleStorage
		}
		fmt.Fprintf(&b, "  - name: %s\n    role: %s\n    mgmt_address: %s\n", n.Name, role, n.IP)
		if role == configs.RoleStorage {
			fmt.Fprintf(&b, "    san_address: %s\n    storage:\n      backend: file\n      file:\n        dir: %s\n",
				n.IP, filepath.Join(dir, "legs", n.Name))
		}
	}
	fmt.Fprintf(&b, "storage:\n  backend: file\n  file:\n    dir: %s\n", filepath.Join(dir, "legs", "cluster"))
	fmt.Fprintf(&b, "fencing:\n  state_dir: state\n  etcd:\n    client_port: %d\n    peer_port: %d\nsecurity:\n  tls_dir: tls\n", client, peer)
	path := filepath.Join(dir, "cluster.yaml")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	cfg, err := configs.Load(path)
	require.NoError(t, err, b.String())
	require.NoError(t, certs.Init(cfg, cfg.Security.TLSDir))
	return cfg
}

// FreePorts finds a client and a peer port that are free on the address
// of every node (others run tests on the same loopback addresses), from
// below the ephemeral range so no outgoing connection takes one first.
func FreePorts(t testing.TB, nodes []Node) (client, peer uint16) {
	t.Helper()
	free := func(p int) bool {
		for _, n := range nodes {
			l, err := net.Listen("tcp", net.JoinHostPort(n.IP, strconv.Itoa(p)))
			if err != nil {
				return false
			}
			_ = l.Close()
		}
		return true
	}
	for range 200 {
		ps, err := freeport.Portals(nodes[0].IP, 2)
		require.NoError(t, err)
		_, cs, _ := net.SplitHostPort(ps[0])
		_, pstr, _ := net.SplitHostPort(ps[1])
		c, _ := strconv.Atoi(cs)
		p, _ := strconv.Atoi(pstr)
		if free(c) && free(p) {
			return uint16(c), uint16(p)
		}
	}
	t.Fatal("membertest: no free ports")
	return 0, 0
}

// Options are node's member options for tests: data under the state dir
// in a directory of the node's own, fast Raft timing, etcd's warnings in
// the test log.
func Options(t testing.TB, cfg *configs.Config, node string) member.Options {
	return member.Options{
		Config:    cfg,
		Node:      node,
		DataDir:   filepath.Join(cfg.Fencing.StateDir, node, "etcd"),
		Heartbeat: 50 * time.Millisecond,
		Election:  500 * time.Millisecond,
		Log:       Logger(t),
	}
}

// Start starts a member and stops it when the test ends.
func Start(t testing.TB, o member.Options) *member.Member {
	t.Helper()
	m, err := member.Start(context.Background(), o)
	require.NoError(t, err)
	t.Cleanup(m.Stop)
	return m
}

// StartAll starts every member of cfg and waits until all are ready.
func StartAll(t testing.TB, cfg *configs.Config) map[string]*member.Member {
	t.Helper()
	ms := map[string]*member.Member{}
	for _, n := range cfg.Nodes {
		ms[n.Name] = Start(t, Options(t, cfg, n.Name))
	}
	for name, m := range ms {
		select {
		case <-m.Ready():
		case <-time.After(30 * time.Second):
			t.Fatalf("membertest: %s not ready after 30 s", name)
		}
	}
	return ms
}

// Logger logs into the test's log until the test's cleanups reach it
// (whatever logs later, e.g. a goroutine of etcd's client, is dropped:
// testing panics on a Log after the test ended).
func Logger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
