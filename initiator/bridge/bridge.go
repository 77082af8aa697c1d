// Package bridge serves the remote legs of a guest's disks to QEMU as
// NBD over local unix sockets, reaching them with the userspace iSCSI
// initiator of initiator/iscsiclient.
//
// Why: QEMU's own iSCSI driver (libiscsi) reconnects synchronously in
// QEMU's main loop, so a dead remote target froze the whole guest (46 s
// measured) and never failed an I/O, so md never dropped the leg. QEMU's
// NBD client is asynchronous. The bridge keeps iSCSI (initiator IQN, CHAP,
// fencing) on the wire and gives the guest open-iscsi's failure
// semantics: while a session is down requests wait up to the I/O timeout
// and then fail with EIO (md's failfast drops the leg), and the bridge
// logs in again with backoff so the leg comes back by itself.
//
// Policy (when to log in again, how long requests wait, what is logged)
// is the pure state machine in policy.go; leg.go runs it with a clock and
// sessions; this file builds the legs of a guest from the cluster file,
// the sockets and the status file.
package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/initiator/iscsiclient"
	"github.com/mhcodi/mhcodi/initiator/nbd"
)

// Options configure a Bridge.
type Options struct {
	Config *configs.Config
	// Node is the node the bridge (and the guest) runs on: its legs are
	// local and not served.
	Node  string
	Guest string
	// SocketDir receives <disk>-<legnode>.sock and bridge.json.
	SocketDir string
	Policy    PolicyConfig
	// CmdTimeout bounds one command on a live session.
	CmdTimeout time.Duration
	// LoginTimeout, PingInterval and PingTimeout go to the iSCSI client.
	LoginTimeout, PingInterval, PingTimeout time.Duration
	HeaderDigest                            bool
	// StaleNodes: the legs on these nodes are stale (the ledger says
	// so); while down they fail requests at once instead of after
	// Policy.IOTimeout (see LegConfig.Stale).
	StaleNodes []string
	Log        *slog.Logger
}

// LegSpec is one leg the bridge serves.
type LegSpec struct {
	Info   configs.LegInfo
	Name   string // <disk>-<node>
	Portal string
	Socket string
}

// Bridge serves the remote legs of one guest.
type Bridge struct {
	opts  Options
	log   *slog.Logger
	specs []LegSpec
	legs  []*Leg
	srvs  []*nbd.Server
	lns   []net.Listener

	statusMu sync.Mutex
}

// maxSocketPath is the room in sockaddr_un.sun_path.
const maxSocketPath = 107

// New resolves the legs of opts.Guest that are not on opts.Node.
func New(opts Options) (*Bridge, error) {
	cfg := opts.Config
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if _, ok := cfg.Node(opts.Node); !ok {
		return nil, fmt.Errorf("node %q is not in %s", opts.Node, cfg.Path)
	}
	if _, ok := cfg.Guest(opts.Guest); !ok {
		return nil, fmt.Errorf("guest %q is not in %s", opts.Guest, cfg.Path)
	}
	var chap *iscsiclient.CHAP
	secrets, err := cfg.LoadCHAPSecrets()
	if err != nil {
		return nil, fmt.Errorf("loading CHAP secrets: %w", err)
	}
	if secrets != nil {
		user, secret, ok := secrets.InitiatorCredentials(cfg, opts.Node)
		if !ok {
			return nil, fmt.Errorf("no initiator CHAP secret for node %s in %s", opts.Node, cfg.Security.CHAPSecrets)
		}
		chap = &iscsiclient.CHAP{User: user, Secret: secret}
	}
	b := &Bridge{opts: opts, log: opts.Log}
	for _, n := range opts.StaleNodes {
		if _, ok := cfg.Node(n); !ok {
			return nil, fmt.Errorf("stale node %q is not a node of %s", n, cfg.Path)
		}
	}
	for _, li := range cfg.Legs() {
		if li.Guest != opts.Guest || li.Node == opts.Node {
			continue
		}
		n, _ := cfg.Node(li.Node)
		if n.SANAddress.IsZero() {
			return nil, fmt.Errorf("leg %s/%s on node %s: the node has no san_address", li.Guest, li.Disk, li.Node)
		}
		spec := LegSpec{Info: li, Name: li.Disk + "-" + li.Node,
			Portal: n.SANAddress.AddrPort(configs.DefaultSANPort).String()}
		spec.Socket = filepath.Join(opts.SocketDir, spec.Name+".sock")
		if len(spec.Socket) > maxSocketPath {
			return nil, fmt.Errorf("socket path %s is longer than %d bytes; use a shorter --socket-dir", spec.Socket, maxSocketPath)
		}
		var mutual *iscsiclient.CHAP
		if ts := secrets.TargetSecret(li.Node); chap != nil && ts != "" {
			// The leg's targetd answers our challenge as the target it
			// is, with its node's target secret (as for open-iscsi).
			mutual = &iscsiclient.CHAP{User: li.TargetIQN, Secret: ts}
		}
		ccfg := iscsiclient.Config{
			Portal: spec.Portal, TargetIQN: li.TargetIQN, InitiatorIQN: cfg.InitiatorIQN(opts.Node),
			CHAP: chap, MutualCHAP: mutual, HeaderDigest: opts.HeaderDigest, LoginTimeout: opts.LoginTimeout,
			PingInterval: opts.PingInterval, PingTimeout: opts.PingTimeout,
			Logger: opts.Log.With("leg", spec.Name),
		}
		leg := NewLeg(LegConfig{
			Name: spec.Name, Size: int64(li.SizeBytes), Policy: opts.Policy, CmdTimeout: opts.CmdTimeout,
			Stale: slices.Contains(opts.StaleNodes, li.Node),
			Log:   opts.Log.With("target", li.TargetIQN, "portal", spec.Portal),
			Dial: func(ctx context.Context) (Session, error) {
				s, err := iscsiclient.Dial(ctx, ccfg)
				if err != nil {
					return nil, err
				}
				return s, nil
			},
			OnChange: func() { b.writeStatus() },
		})
		b.specs = append(b.specs, spec)
		b.legs = append(b.legs, leg)
	}
	if len(b.legs) == 0 {
		return nil, fmt.Errorf("guest %s has no leg outside node %s: nothing to bridge", opts.Guest, opts.Node)
	}
	return b, nil
}

// Legs lists the legs served.
func (b *Bridge) Legs() []LegSpec { return b.specs }

// Listen creates the sockets (replacing stale ones) and writes the first
// status file. The hypervisor driver waits for the socket files, so they
// exist before the bridge reports ready.
func (b *Bridge) Listen() error {
	if err := os.MkdirAll(b.opts.SocketDir, 0o755); err != nil {
		return fmt.Errorf("creating the socket directory: %w", err)
	}
	for i, spec := range b.specs {
		if err := os.Remove(spec.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
			b.closeListeners()
			return fmt.Errorf("removing a stale socket: %w", err)
		}
		ln, err := net.Listen("unix", spec.Socket)
		if err != nil {
			b.closeListeners()
			return fmt.Errorf("listening on %s: %w", spec.Socket, err)
		}
		b.lns = append(b.lns, ln)
		b.srvs = append(b.srvs, &nbd.Server{Name: spec.Info.TargetIQN, Backend: b.legs[i],
			Description: fmt.Sprintf("%s/%s on %s", spec.Info.Guest, spec.Info.Disk, spec.Info.Node),
			Log:         b.log.With("leg", spec.Name)})
	}
	b.writeStatus()
	return nil
}

func (b *Bridge) closeListeners() {
	for _, ln := range b.lns {
		ln.Close()
	}
	b.lns = nil
}

// Serve runs the legs and the NBD servers until ctx ends, then closes the
// sockets, logs out and writes the final status.
func (b *Bridge) Serve(ctx context.Context) error {
	if len(b.lns) != len(b.legs) {
		return errors.New("bridge: Serve before Listen")
	}
	var wg sync.WaitGroup
	for i, leg := range b.legs {
		wg.Add(2)
		go func() { defer wg.Done(); leg.Run(ctx) }()
		go func() {
			defer wg.Done()
			if err := b.srvs[i].Serve(b.lns[i]); err != nil && !errors.Is(err, nbd.ErrServerClosed) {
				b.log.Error("nbd server stopped", "leg", leg.Name(), "err", err)
			}
		}()
	}
	<-ctx.Done()
	// Sockets first: QEMU's pending requests fail now, not later.
	for i, s := range b.srvs {
		s.Close()
		os.Remove(b.specs[i].Socket)
	}
	wg.Wait()
	b.writeStatus()
	return nil
}

// Status is the content of bridge.json.
type Status struct {
	Node    string      `json:"node"`
	Guest   string      `json:"guest"`
	PID     int         `json:"pid"`
	Updated time.Time   `json:"updated"`
	Legs    []LegStatus `json:"legs"`
}

// LegStatus is one leg in bridge.json.
type LegStatus struct {
	Leg       string    `json:"leg"`
	Disk      string    `json:"disk"`
	Node      string    `json:"node"`
	Target    string    `json:"target"`
	Portal    string    `json:"portal"`
	Socket    string    `json:"socket"`
	State     State     `json:"state"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
}

// Status reports every leg.
func (b *Bridge) Status() Status {
	st := Status{Node: b.opts.Node, Guest: b.opts.Guest, PID: os.Getpid(), Updated: time.Now().UTC()}
	for i, spec := range b.specs {
		state, since, reason := b.legs[i].State()
		st.Legs = append(st.Legs, LegStatus{Leg: spec.Name, Disk: spec.Info.Disk, Node: spec.Info.Node,
			Target: spec.Info.TargetIQN, Portal: spec.Portal, Socket: spec.Socket,
			State: state, Since: since.UTC(), LastError: reason})
	}
	return st
}

// StatusPath is where the status file is written.
func (b *Bridge) StatusPath() string { return filepath.Join(b.opts.SocketDir, "bridge.json") }

// writeStatus replaces bridge.json atomically (readers never see half a
// file).
func (b *Bridge) writeStatus() {
	b.statusMu.Lock()
	defer b.statusMu.Unlock()
	data, err := json.MarshalIndent(b.Status(), "", "  ")
	if err != nil {
		b.log.Error("encoding the status", "err", err)
		return
	}
	path := b.StatusPath()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		b.log.Error("writing the status file", "path", tmp, "err", err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		b.log.Error("writing the status file", "path", path, "err", err)
	}
}
