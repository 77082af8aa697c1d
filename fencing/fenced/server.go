package fenced

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/events"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/fencing/ops"
)

// Options make a Server.
type Options struct {
	Config *configs.Config
	Node   string
	// Witness: a ledger member only (no hypervisor, no guests, no legs).
	Witness bool
	// Driver runs this node's guests (hypervisor.New); nil on a witness.
	Driver hypervisor.Driver
	// SpecOptions are passed to hypervisor.SpecFor on every start (the
	// driver's run directory in tests…).
	SpecOptions []hypervisor.SpecOption
	// Targetd is the local targetd's control API; nil on a witness.
	Targetd TargetControl
	// HostNet reads this node's bridges for the node status (default
	// hypervisor.NetlinkNet{}, fenced's own network namespace).
	HostNet hypervisor.HostNet
	// Ledger starts the member and the Store.
	Ledger LedgerStarter
	// NewOperator makes the Operator of PathOp and automatic failover
	// (ops.New); nil answers PathOp with 501 and disables auto failover.
	NewOperator func(ops.Env) Operator
	// ServerTLS is the HTTPS listener's config (certs.ServerTLS: the
	// cluster's CA, client certificates required); ClientTLS is this
	// node's client config towards the other nodes (certs.ClientTLS).
	ServerTLS *tls.Config
	ClientTLS *tls.Config
	// PeerName names the member behind a verified client certificate
	// (certs.PeerName); default DefaultPeerName.
	PeerName PeerNameFunc
	// PeerClient overrides how another node's fenced is reached (tests);
	// default HTTPS on its management address with ClientTLS.
	PeerClient func(node string) api.Client
	// StateDir holds the started epochs and the last lease renewal
	// (default cfg.Fencing.StateDir).
	StateDir string
	// ProcFS is procfs's mount point (default /proc).
	ProcFS string
	Clock  Clock
	// Timers are the timers of the lease watch (default: real timers on
	// Clock's time).
	Timers Timers
	Logger *slog.Logger
	// Registry receives the metrics (default a new one).
	Registry *prometheus.Registry
}

// Server is one node's mhcodi-fenced.
type Server struct {
	cfg      *configs.Config
	self     string
	witness  bool
	quorum   bool // QuorumMode
	driver   hypervisor.Driver
	specOpts []hypervisor.SpecOption
	targetd  TargetControl
	hostNet  hypervisor.HostNet
	starter  LedgerStarter
	op       Operator
	peerName PeerNameFunc
	clientTL *tls.Config
	peerFn   func(string) api.Client
	procFS   string
	stateDir string
	clock    Clock
	timers   Timers
	journal  *events.Journal
	hook     *events.Hook
	log      *slog.Logger
	reg      *prometheus.Registry
	met      *metrics

	ledger   *ledgerRef
	started  *startedBook
	channels *channelKeeper
	keeper   *LeaseKeeper
	dog      *Watchdog
	failover *failoverRunner
	loopback api.Client

	memberMu sync.Mutex
	member   Member
	ready    chan struct{}

	mu        sync.Mutex
	guards    map[string]*guard
	held      map[string]bool
	clients   map[string]api.Client
	incidents []Incident

	kick    chan struct{}
	baseCtx context.Context
	// lastRound is when the last monitor round ended (unix nanoseconds).
	lastRound atomic.Int64
}

// guard serialises requests and monitor actions on one guest: busy while
// one runs; gen grows with every start, so a monitor decision made before
// a start is not carried out after it.
type guard struct {
	busy bool
	gen  uint64
	// freed is closed when busy is cleared, for those waiting for it.
	freed chan struct{}
}

// Incident is a guest this node destroyed on its own.
type Incident struct {
	Time   time.Time `json:"time"`
	Guest  string    `json:"guest"`
	Owner  string    `json:"owner,omitempty"`
	Epoch  uint64    `json:"epoch,omitempty"`
	Reason string    `json:"reason"`
	Err    string    `json:"err,omitempty"`
}

// maxIncidents is how many incidents NodeStatus keeps.
const maxIncidents = 32

// New checks o and makes the Server; Run starts it.
func New(o Options) (*Server, error) {
	if o.Config == nil {
		return nil, errors.New("fenced: no configuration")
	}
	n, ok := o.Config.Node(o.Node)
	if !ok {
		return nil, fmt.Errorf("fenced: node %q is not in %s", o.Node, o.Config.Path)
	}
	isWitness := n.Role == configs.RoleWitness
	if o.Witness != isWitness {
		if o.Witness {
			return nil, fmt.Errorf("fenced: --witness, but %s's role in %s is %q", o.Node, o.Config.Path, n.Role)
		}
		return nil, fmt.Errorf("fenced: %s is a witness in %s: run it with --witness", o.Node, o.Config.Path)
	}
	if !o.Witness && (o.Driver == nil || o.Targetd == nil) {
		return nil, errors.New("fenced: a storage node needs a hypervisor driver and targetd's control client")
	}
	if o.Ledger == nil {
		return nil, errors.New("fenced: no ledger")
	}
	s := &Server{
		cfg: o.Config, self: o.Node, witness: o.Witness, quorum: QuorumMode(o.Config),
		driver: o.Driver, specOpts: o.SpecOptions, targetd: o.Targetd, hostNet: o.HostNet, starter: o.Ledger,
		peerName: o.PeerName, clientTL: o.ClientTLS, peerFn: o.PeerClient,
		procFS: o.ProcFS, stateDir: o.StateDir, clock: o.Clock, timers: o.Timers, log: o.Logger, reg: o.Registry,
		ledger: &ledgerRef{}, ready: make(chan struct{}),
		guards: map[string]*guard{}, held: map[string]bool{}, clients: map[string]api.Client{},
		kick: make(chan struct{}, 1), baseCtx: context.Background(),
	}
	if s.peerName == nil {
		s.peerName = DefaultPeerName
	}
	if s.hostNet == nil {
		s.hostNet = hypervisor.NetlinkNet{}
	}
	if s.procFS == "" {
		s.procFS = "/proc"
	}
	if s.stateDir == "" {
		s.stateDir = o.Config.Fencing.StateDir
	}
	if s.clock == nil {
		s.clock = realClock{}
	}
	if s.timers == nil {
		s.timers = clockTimers{s.clock}
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("node", s.self)
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	s.met = newMetrics(s.reg)
	var err error
	s.started, err = openStartedBook(filepath.Join(s.stateDir, "started.json"))
	if err != nil && s.started == nil {
		return nil, fmt.Errorf("fenced: %w", err)
	} else if err != nil {
		s.log.Warn("started epochs lost", "err", err)
	}
	s.journal, err = events.OpenJournal(filepath.Join(s.stateDir, "events.jsonl"), events.DefaultKeep)
	if err != nil {
		return nil, fmt.Errorf("fenced: %w", err)
	}
	s.hook = events.NewHook(s.cfg.Fencing.EventHook, s.log)
	if o.NewOperator != nil {
		s.op = o.NewOperator(Env{s: s})
		s.failover = &failoverRunner{op: s.op, log: s.log, on: map[string]bool{}, record: s.recordOp}
	}
	if !s.witness {
		dial, _ := s.driver.(hypervisor.Channeler)
		s.channels = newChannelKeeper(s.self, s.cfg, dial, s.ledger, s.started, s.clock, s.log)
		s.channels.emit = s.emit
		if err := s.reg.Register(newArrayCollector(s.channels.Arrays, s.clock)); err != nil {
			return nil, fmt.Errorf("fenced: array metrics: %w", err)
		}
	}
	s.loopback = api.NewClientWithTransport(s.self, "http://loopback", loopback{h: s.localHandler()})
	return s, nil
}

// Healthy reports whether the loops run: a monitor round ended within
// maxAge (a witness runs none and is healthy while it serves). It feeds
// systemd's watchdog, so a wedged fenced is restarted.
func (s *Server) Healthy(maxAge time.Duration) bool {
	if s.witness {
		return true
	}
	last := s.lastRound.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < maxAge
}

// Registry holds the Server's metrics.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Ledger is the Server's view of the ledger.
func (s *Server) Ledger() *ledgerRef { return s.ledger }

// Ready is closed once the ledger is up.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// acquire marks guest busy; false if it already is.
func (s *Server) acquire(guest string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.guards[guest]
	if g == nil {
		g = &guard{}
		s.guards[guest] = g
	}
	if g.busy {
		return false
	}
	g.busy = true
	return true
}

func (s *Server) release(guest string, started bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.guards[guest]
	g.busy = false
	if started {
		g.gen++
	}
	if g.freed != nil {
		close(g.freed)
		g.freed = nil
	}
}

// acquireWait is acquire that waits for the guest's other request (or
// the monitor's destroy) to finish, until ctx is done. A stop or destroy
// takes it: whatever the other one did, the guest must not run here
// afterwards, and a second stop of a guest being stopped is not a
// conflict but the same wish (issue 12: the monitor's destroy made a
// planned failover's stop fail with 409).
func (s *Server) acquireWait(ctx context.Context, guest string) bool {
	for {
		s.mu.Lock()
		g := s.guards[guest]
		if g == nil {
			g = &guard{}
			s.guards[guest] = g
		}
		if !g.busy {
			g.busy = true
			s.mu.Unlock()
			return true
		}
		if g.freed == nil {
			g.freed = make(chan struct{})
		}
		freed := g.freed
		s.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return false
		}
	}
}

func (s *Server) guardSnapshot() (busy map[string]bool, gens map[string]uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	busy, gens = map[string]bool{}, map[string]uint64{}
	for n, g := range s.guards {
		busy[n] = g.busy
		gens[n] = g.gen
	}
	return busy, gens
}

// acquireAt marks guest busy if no start happened since gens was read.
func (s *Server) acquireAt(guest string, gen uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.guards[guest]
	if g == nil {
		g = &guard{}
		s.guards[guest] = g
	}
	if g.busy || g.gen != gen {
		return false
	}
	g.busy = true
	return true
}

func (s *Server) addIncident(in Incident) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.incidents = append(s.incidents, in)
	if len(s.incidents) > maxIncidents {
		s.incidents = s.incidents[len(s.incidents)-maxIncidents:]
	}
}

// Incidents are the guests this node destroyed on its own, oldest first.
func (s *Server) Incidents() []Incident {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Incident(nil), s.incidents...)
}

// client reaches node's fenced: the in-process loopback for this node,
// HTTPS on the management address for the others.
func (s *Server) client(node string) api.Client {
	if node == s.self {
		return s.loopback
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[node]; ok {
		return c
	}
	var c api.Client
	if s.peerFn != nil {
		c = s.peerFn(node)
	} else {
		n, ok := s.cfg.Node(node)
		if !ok {
			return unknownNode(node)
		}
		c = api.NewHTTPClient(node, "https://"+n.MgmtAddress.AddrPort(configs.DefaultMgmtPort).String(), s.clientTL)
	}
	s.clients[node] = c
	return c
}

// peers are the other nodes of the cluster file.
func (s *Server) peers() []string {
	var out []string
	for _, n := range s.cfg.Nodes {
		if n.Name != s.self {
			out = append(out, n.Name)
		}
	}
	return out
}

// askPeers asks every other node's fenced for its ledger, at once, and
// returns the answers that came within a second and a half.
func (s *Server) askPeers(ctx context.Context) []api.LedgerResponse {
	ctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	peers := s.peers()
	res := make([]*api.LedgerResponse, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lr, err := s.client(p).Ledger(ctx)
			if err != nil {
				s.log.Debug("peer's ledger not available", "peer", p, "err", err)
				return
			}
			if lr.Node == "" {
				lr.Node = p
			}
			res[i] = &lr
		}()
	}
	wg.Wait()
	var out []api.LedgerResponse
	for _, r := range res {
		if r != nil {
			out = append(out, *r)
		}
	}
	return out
}

// ListenUnix opens the root-only local socket at path (mode 0600),
// replacing a stale socket file but not a live one.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("fenced socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("fenced socket %s is in use: is another fenced running?", path)
		}
		os.Remove(path)
	}
	// The umask makes the socket 0600 from its creation on, so there is
	// no moment when another user could connect.
	old := umask(0o177)
	ln, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("fenced socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("fenced socket: %w", err)
	}
	return ln, nil
}

type unknownNode string

func (u unknownNode) err() error   { return fmt.Errorf("node %q is not in the cluster file", string(u)) }
func (u unknownNode) Node() string { return string(u) }
func (u unknownNode) NodeStatus(context.Context) (api.NodeStatus, error) {
	return api.NodeStatus{}, u.err()
}
func (u unknownNode) Ledger(context.Context) (api.LedgerResponse, error) {
	return api.LedgerResponse{}, u.err()
}
func (u unknownNode) Fence(context.Context, api.FenceRequest) error               { return u.err() }
func (u unknownNode) Start(context.Context, string, api.StartRequest) error       { return u.err() }
func (u unknownNode) Stop(context.Context, string, api.StopRequest) error         { return u.err() }
func (u unknownNode) Destroy(context.Context, string) error                       { return u.err() }
func (u unknownNode) Op(context.Context, api.OpRequest, func(api.Progress)) error { return u.err() }
func (u unknownNode) Join(context.Context, api.JoinRequest) (api.JoinResponse, error) {
	return api.JoinResponse{}, u.err()
}
