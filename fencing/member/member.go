// Package member runs a node's embedded etcd member: the ledger's store,
// one voting member per storage node and witness, peers and clients over
// mutual TLS with the cluster's certificates.
//
// It also carries the two moves that take a ledger out of the ordinary:
// forking it to a lone survivor (ForceNewCluster, the operator's word that
// the other nodes are down), and bringing a node whose ledger was forked
// away back in as a new member (ResetData, AddMember, Join).
package member

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/certs"
)

// ErrRemoved: the cluster no longer counts this member (another node
// forked the ledger, or removed it). Its data is history: move it aside
// (ResetData) and ask a member to add this node again (api.PathJoin).
var ErrRemoved = errors.New("member: removed from the cluster")

// ErrStopped: the member stopped by itself for another reason.
var ErrStopped = errors.New("member: etcd stopped")

// Options start a member.
type Options struct {
	Config *configs.Config
	Node   string
	// DataDir defaults to <fencing.state_dir>/etcd, TLSDir to
	// security.tls_dir.
	DataDir string
	TLSDir  string
	// ClientPort and PeerPort replace fencing.etcd's ports, for every node
	// (tests: free ports on loopback addresses).
	ClientPort, PeerPort uint16
	// ForceNewCluster forks the ledger to this member alone: its data
	// stays, every other member is removed. Only for the operator's
	// forced failover; unsafe if another member is in fact alive.
	ForceNewCluster bool
	// Join starts the member in an existing cluster, as a member a
	// survivor added (AddMember); the data dir must be empty.
	Join *api.JoinResponse
	// Heartbeat and Election are Raft's timing (etcd's defaults of 100 ms
	// and 1 s when zero).
	Heartbeat, Election time.Duration
	// LogLevel is the least level of etcd's messages that reach Log
	// (warn when zero).
	LogLevel zapcore.Level
	Log      *slog.Logger
}

// Member is a running embedded etcd member.
type Member struct {
	opts      Options
	log       *slog.Logger
	name      string
	peerURL   url.URL
	clientURL url.URL

	// mu guards e, cli and the channels of the current run (a member is
	// restarted in place by Fork and Rejoin).
	mu      sync.Mutex
	e       *embed.Etcd
	cli     *clientv3.Client
	done    chan struct{} // closed when the current run ends, for any reason
	err     error         // why it ended by itself; nil after Stop
	removed atomic.Bool   // etcd said this member was removed
	// stopping quiets etcd's complaints about the listeners it is
	// closing on purpose.
	stopping atomic.Bool
	stopped  bool // Stop was called

	// promotions are AddMember's background promotions of learners.
	wg     sync.WaitGroup
	cancel context.CancelFunc
	ctx    context.Context
}

// Start starts node's member and returns once it listens; it does not
// wait for quorum (Ready does), so a node alone still answers. ctx is not
// kept: the member runs until Stop.
func Start(_ context.Context, o Options) (*Member, error) {
	if o.Config == nil {
		return nil, errors.New("member: no cluster config")
	}
	n, ok := o.Config.Node(o.Node)
	if !ok {
		return nil, fmt.Errorf("member: node %q is not in the cluster file", o.Node)
	}
	if n.Role != configs.RoleStorage && n.Role != configs.RoleWitness {
		return nil, fmt.Errorf("member: node %q has role %q, which holds no ledger member", o.Node, n.Role)
	}
	if o.DataDir == "" {
		o.DataDir = filepath.Join(o.Config.Fencing.StateDir, "etcd")
	}
	if o.TLSDir == "" {
		o.TLSDir = o.Config.Security.TLSDir
	}
	if o.ClientPort == 0 {
		o.ClientPort = o.Config.Fencing.Etcd.ClientPort
	}
	if o.PeerPort == 0 {
		o.PeerPort = o.Config.Fencing.Etcd.PeerPort
	}
	if o.LogLevel == 0 {
		o.LogLevel = zapcore.WarnLevel
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	m := &Member{
		opts:      o,
		log:       o.Log.With("node", o.Node),
		name:      o.Node,
		peerURL:   PeerURL(*n, o.PeerPort),
		clientURL: ClientURL(*n, o.ClientPort),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if err := m.start(o.ForceNewCluster, o.Join); err != nil {
		m.cancel()
		return nil, err
	}
	return m, nil
}

// PeerURL and ClientURL are where node's member listens.
func PeerURL(n configs.Node, port uint16) url.URL {
	return url.URL{Scheme: "https", Host: hostPort(n, port)}
}

func ClientURL(n configs.Node, port uint16) url.URL {
	return url.URL{Scheme: "https", Host: hostPort(n, port)}
}

func hostPort(n configs.Node, port uint16) string {
	// JoinHostPort brackets an IPv6 address.
	return net.JoinHostPort(n.MgmtAddress.IP.String(), strconv.Itoa(int(port)))
}

// InitialCluster is etcd's --initial-cluster for a new cluster: every
// storage node and witness, name=peer URL.
func InitialCluster(cfg *configs.Config, peerPort uint16) string {
	var parts []string
	for _, n := range cfg.Nodes {
		if n.Role == configs.RoleStorage || n.Role == configs.RoleWitness {
			u := PeerURL(n, peerPort)
			parts = append(parts, n.Name+"="+u.String())
		}
	}
	return strings.Join(parts, ",")
}

// ClientURLs are the client URLs of every member (for a client that may
// use any of them, e.g. the CLI).
func ClientURLs(cfg *configs.Config, clientPort uint16) []string {
	var out []string
	for _, n := range cfg.Nodes {
		if n.Role == configs.RoleStorage || n.Role == configs.RoleWitness {
			u := ClientURL(n, clientPort)
			out = append(out, u.String())
		}
	}
	return out
}

func (m *Member) start(force bool, join *api.JoinResponse) error {
	o := m.opts
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = o.DataDir
	cfg.ListenPeerUrls = []url.URL{m.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{m.peerURL}
	cfg.ListenClientUrls = []url.URL{m.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{m.clientURL}
	// No metrics listener and no HTTP gateway: the API is fenced's.
	cfg.ListenMetricsUrls = nil
	cfg.InitialClusterToken = "mhcodi-" + o.Config.Cluster.Name
	cfg.InitialCluster = InitialCluster(o.Config, o.PeerPort)
	cfg.ClusterState = embed.ClusterStateFlagNew
	if join != nil {
		if hasData(o.DataDir) {
			return fmt.Errorf("member: joining with data in %s; move it aside first (ResetData)", o.DataDir)
		}
		cfg.InitialCluster = join.InitialCluster
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	cfg.ForceNewCluster = force
	if o.Heartbeat > 0 {
		cfg.TickMs = uint(o.Heartbeat / time.Millisecond)
	}
	if o.Election > 0 {
		cfg.ElectionMs = uint(o.Election / time.Millisecond)
	}
	tls := transport.TLSInfo{
		CertFile:       certs.CertFile(o.TLSDir, m.name),
		KeyFile:        certs.KeyFile(o.TLSDir, m.name),
		TrustedCAFile:  filepath.Join(o.TLSDir, certs.CACert),
		ClientCertAuth: true,
		// etcd would also insist that a caller's address be one its
		// certificate names, looking the certificate's names up in DNS
		// when it is not: a multi-homed node calling from another
		// address would be refused, and the check would hang on DNS
		// when the network is in trouble, which is when the ledger
		// matters. The CA signs only the cluster's nodes and the CLI,
		// and the mutual TLS handshake already proves which one calls.
		SkipClientSANVerify: true,
	}
	cfg.PeerTLSInfo = tls
	cfg.ClientTLSInfo = tls
	cfg.Logger = "zap"
	m.removed.Store(false)
	core := &slogCore{log: m.log.With("component", "etcd"), min: o.LogLevel, removed: func() { m.removed.Store(true) }, quiet: &m.stopping}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(core))

	if err := os.MkdirAll(filepath.Dir(o.DataDir), 0o700); err != nil {
		return fmt.Errorf("member: %w", err)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("member %s: starting etcd (data %s, peer %s): %w", m.name, o.DataDir, m.peerURL.String(), err)
	}
	cli, err := m.newClient(core)
	if err != nil {
		e.Close()
		return err
	}
	done := make(chan struct{})
	m.mu.Lock()
	m.e, m.cli, m.done, m.err, m.stopped = e, cli, done, nil, false
	m.mu.Unlock()
	m.log.Info("etcd member started", "peer", m.peerURL.String(), "client", m.clientURL.String(), "data", o.DataDir,
		"force_new_cluster", force, "join", join != nil)

	go m.watch(e, done)
	return nil
}

// watch waits for the run to end and records why, unless Stop ended it.
func (m *Member) watch(e *embed.Etcd, done chan struct{}) {
	<-e.Server.StopNotify()
	m.mu.Lock()
	if !m.stopped && m.e == e {
		switch {
		case m.removed.Load():
			m.err = ErrRemoved
			m.log.Error("etcd member removed from the cluster; its data must be moved aside and the node rejoin")
		default:
			m.err = ErrStopped
			m.log.Error("etcd member stopped by itself")
		}
	}
	m.mu.Unlock()
	close(done)
}

// newClient makes the member's client: its own endpoint only, so the
// ledger a node sees is the ledger its member can reach (a partitioned
// node gets ErrNoQuorum, not another member's answer through a path it
// will not have when it matters).
func (m *Member) newClient(core *slogCore) (*clientv3.Client, error) {
	tlsCfg, err := certs.ClientTLS(m.opts.TLSDir, m.name)
	if err != nil {
		return nil, fmt.Errorf("member %s: %w", m.name, err)
	}
	cc := *core
	cc.min = zapcore.ErrorLevel
	cc.removed = func() {}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{m.clientURL.String()},
		TLS:       tlsCfg,
		// Notice a dead connection within seconds: the lease TTL is ~10 s.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.New(&cc),
	})
	if err != nil {
		return nil, fmt.Errorf("member %s: client: %w", m.name, err)
	}
	return cli, nil
}

// Name is the member's (node's) name.
func (m *Member) Name() string { return m.name }

// PeerURL is the member's peer URL.
func (m *Member) PeerURL() string { return m.peerURL.String() }

// ClientURL is the member's client URL.
func (m *Member) ClientURL() string { return m.clientURL.String() }

// Client is the member's client (the node's certificate, its own
// endpoint). It stays the same across Fork and Rejoin, and Stop closes
// it; callers do not.
func (m *Member) Client() *clientv3.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cli
}

// Ready is closed once the member has joined its cluster and can serve
// (it needs quorum for that). After Stop it is never closed.
func (m *Member) Ready() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e == nil {
		return nil
	}
	return m.e.Server.ReadyNotify()
}

// Done is closed when the current run of the member ends: Stop, or by
// itself (Err says why).
func (m *Member) Done() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done
}

// Err says why the member stopped by itself: ErrRemoved, or ErrStopped
// (wrapping etcd's error). nil while it runs or after Stop.
func (m *Member) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Removed reports whether the member found it was removed from the
// cluster (see ErrRemoved).
func (m *Member) Removed() bool { return errors.Is(m.Err(), ErrRemoved) }

// Stop stops the member and closes its client.
func (m *Member) Stop() {
	m.cancel()
	m.wg.Wait()
	// The client first: etcd's graceful stop waits for open streams
	// (watches, keepalives) to end.
	m.mu.Lock()
	cli := m.cli
	m.cli = nil
	m.mu.Unlock()
	if cli != nil {
		_ = cli.Close()
	}
	m.stopRun()
}

// stopRun ends the current run of etcd; the client stays, and reconnects
// to the next run.
func (m *Member) stopRun() {
	m.mu.Lock()
	e, done := m.e, m.done
	m.e = nil
	m.stopped = true
	m.err = nil
	m.mu.Unlock()
	if e == nil {
		return
	}
	m.stopping.Store(true)
	e.Close()
	<-done
	m.stopping.Store(false)
}

// Fork restarts the member with ForceNewCluster: the ledger continues on
// this member alone, with its data (ops.Env.ForceNewCluster). The client
// stays valid; it reconnects.
func (m *Member) Fork(context.Context) error {
	m.log.Warn("forking the ledger to this node alone (force-new-cluster): the operator says every other member is down")
	m.stopRun()
	return m.start(true, nil)
}

// Rejoin moves the member's data aside and starts it as a new member of
// the cluster a survivor's AddMember described.
func (m *Member) Rejoin(_ context.Context, join api.JoinResponse) error {
	m.stopRun()
	if _, err := ResetData(m.opts.DataDir); err != nil {
		return err
	}
	return m.start(false, &join)
}

// AddMember adds node name (peer URL peerURL) to the cluster as a new
// member and returns the --initial-cluster it must start with. The node
// is added as a learner, which does not count for quorum, and promoted to
// a voter in the background once it has caught up: added as a voter at
// once, a node that then fails to start would take the quorum of a lone
// survivor with it (etcd's strict reconfig check refuses that anyway). A
// member already registered at peerURL (a join retried, or a node that
// wiped its data again) is removed first.
func (m *Member) AddMember(ctx context.Context, name, peerURL string) (string, error) {
	cli := m.Client()
	if cli == nil {
		return "", ErrStopped
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := cli.MemberList(ctx)
	if err != nil {
		return "", fmt.Errorf("member: listing members: %w", err)
	}
	for _, mm := range list.Members {
		if slices.Contains(mm.PeerURLs, peerURL) {
			if mm.Name != "" && mm.Name != name {
				// Only the node itself may give its place up.
				return "", fmt.Errorf("member: %s is the peer URL of member %s, not of %s", peerURL, mm.Name, name)
			}
			if _, err := cli.MemberRemove(ctx, mm.ID); err != nil {
				return "", fmt.Errorf("member: removing the old %s (%x): %w", name, mm.ID, err)
			}
			m.log.Info("removed a stale member before adding it again", "member", name, "id", fmt.Sprintf("%x", mm.ID))
		}
	}
	resp, err := cli.MemberAddAsLearner(ctx, []string{peerURL})
	if err != nil {
		return "", fmt.Errorf("member: adding %s at %s: %w", name, peerURL, err)
	}
	var parts []string
	for _, mm := range resp.Members {
		n := mm.Name
		if mm.ID == resp.Member.ID {
			n = name
		}
		for _, u := range mm.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	m.log.Info("added a member as learner", "member", name, "peer", peerURL, "id", fmt.Sprintf("%x", resp.Member.ID))
	m.wg.Add(1)
	go m.promote(name, resp.Member.ID)
	return strings.Join(parts, ","), nil
}

// promoteFor is how long AddMember's promotion keeps trying; a learner
// left behind only lacks a vote, and the next join retries.
const promoteFor = 5 * time.Minute

func (m *Member) promote(name string, id uint64) {
	defer m.wg.Done()
	ctx, cancel := context.WithTimeout(m.ctx, promoteFor)
	defer cancel()
	t := time.NewTicker(300 * time.Millisecond)
	defer t.Stop()
	var last error
	for {
		select {
		case <-ctx.Done():
			if m.ctx.Err() == nil {
				m.log.Warn("gave up promoting a learner to voter", "member", name, "err", last)
			}
			return
		case <-t.C:
		}
		cli := m.Client()
		if cli == nil {
			return
		}
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.MemberPromote(rctx, id)
		rcancel()
		if err == nil {
			m.log.Info("promoted a learner to voter", "member", name)
			return
		}
		// Mostly "learner not in sync with leader yet".
		last = err
	}
}

func hasData(dir string) bool {
	ents, err := os.ReadDir(dir)
	return err == nil && len(ents) > 0
}

// ResetData moves dir aside to dir.old (replacing an older backup, so one
// is kept) and returns where it went ("" when there was nothing). A
// removed member's data is not deleted: it is the only record of what
// that node did while it was cut off.
func ResetData(dir string) (string, error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	bak := filepath.Clean(dir) + ".old"
	if err := os.RemoveAll(bak); err != nil {
		return "", fmt.Errorf("member: removing the older backup: %w", err)
	}
	if err := os.Rename(dir, bak); err != nil {
		return "", fmt.Errorf("member: moving %s aside: %w", dir, err)
	}
	return bak, nil
}
