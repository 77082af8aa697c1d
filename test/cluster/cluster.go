// Package cluster builds a whole mhcodi cluster on one machine for
// end-to-end tests and `make demo`: every host is a network namespace, all
// of them joined by a bridge (the SAN) that lives in a namespace of its
// own, and every daemon is the real binary from bin/ running inside its
// host's namespace. The root namespace's interfaces and routes are never
// touched, and a host reaches nothing but the other hosts: it has no
// default route.
//
// Names carry a per-run random prefix (mhc1a2b3-node-a), so runs in
// parallel and leftovers of crashed runs never collide. Every cluster
// records what it made (namespaces, processes with their start times) in
// <dir>/cluster.json and in /run/mhcodi-test-cluster/<prefix>.json, from
// which Sweep removes what a crashed run left.
//
//	c, err := cluster.New(ctx, cluster.Options{Nodes: 2, Witness: true})
//	defer c.Close()
//	b := c.Host("node-b")
//	targetd, err := b.StartTargetd(ctx)
//	a := c.Host("node-a")
//	out, err := a.Exec(ctx, "iscsi-ls", "-i", a.InitiatorIQN(), "iscsi://"+b.Addr.String()+"/").CombinedOutput()
//	err = b.Cut() // its cable is pulled: nothing reaches it, it reaches nothing
//
// In tests, NewT does the same and tears down when the test ends.
//
// With fencing (Options.TLS makes the certificates, Options.Fencing and
// Timeouts set the sections), every host runs mhcodi-fenced with its own
// copy of the cluster file (Host.ConfigPath) and its CLI talks to it:
//
//	c := cluster.NewT(t, cluster.Options{Witness: true, TLS: true, Fencing: []string{"auto_failover: true"}})
//	_, err := c.Host("node-a").StartFenced(ctx)
//	res, err := c.Host("node-a").CLI(ctx, "guest", "start", "demo")
//	procs, err := c.Host("node-a").TrackGuests() // the qemu and bridge fenced started
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/mhcodi/mhcodi/configs"
)

// Options says what cluster to build. The zero value is two storage nodes,
// no witness, the demo guest, in a fresh temporary directory.
type Options struct {
	// Nodes is the number of storage nodes, named node-a, node-b, …
	// (default 2, at most 26).
	Nodes int
	// Witness adds a node "witness" of role witness: a namespace and an
	// address, no storage.
	Witness bool
	// Guests go into the cluster file; nil means DefaultGuests.
	Guests []configs.Guest
	// ExtraYAML is appended to the generated cluster file: top-level
	// sections it does not write. It must not repeat a section that other
	// options write (fencing always; timeouts with Timeouts, security
	// with TLS).
	ExtraYAML string
	// Fencing are more "key: value" lines of the fencing section
	// (auto_failover: true); state_dir is set per node (Host.ConfigPath).
	Fencing []string
	// Timeouts are "key: value" lines of a timeouts section
	// (lease_ttl: 10s).
	Timeouts []string
	// TLS gives the cluster certificates: security.tls_dir is TLSDir, and
	// New fills it with `mhcodi cluster init`, as an operator would.
	// mhcodi-fenced needs them.
	TLS bool
	// ClusterName and IQNPrefix default to "test" and
	// "iqn.2026-11.org.mhcodi".
	ClusterName, IQNPrefix string
	// Hypervisor are more "key: value" lines of the hypervisor section
	// (io_timeout: 3s).
	Hypervisor []string
	// ImageDir is hypervisor.image_dir; default <dir>/image.
	ImageDir string
	// ServiceNetwork adds a service network "svc" beside the SAN: a
	// bridge br-svc on every storage host, uplinked to a switch that a
	// "client" namespace is on too (see Ping). Guests' NICs go on it; a
	// NIC address ".N" in Guests is host N of the service subnet.
	ServiceNetwork bool

	// Prefix starts every namespace name; default "mhc" and 5 random hex
	// digits. Keep it short: it is part of names the kernel limits.
	Prefix string
	// Dir holds the cluster file, volumes, state, run and log directories;
	// default a new directory under os.TempDir. It is removed by Close
	// unless Keep, or unless the caller gave it and it existed before.
	Dir string
	// Keep leaves Dir (logs, volumes) in place after Close.
	Keep bool
	// BinDir holds mhcodi and mhcodi-targetd; default $MHCODI_BIN_DIR, else
	// bin/ of the repository around the working directory.
	BinDir string
	// Logger gets what the cluster does; default slog.Default().
	Logger *slog.Logger
	// Detach makes the daemons outlive this process (no death signal, own
	// session) and leaves signals alone: for the CLI's `up`, after which
	// `down` (Sweep) tears the cluster down. Tests never set it.
	Detach bool
}

// Cluster is a running test cluster. Its methods are safe for concurrent
// use; Close may be called from a signal handler goroutine while a test is
// still using the cluster.
type Cluster struct {
	// Config is the generated cluster file as configs.Load read it back;
	// ConfigPath is that file.
	Config     *configs.Config
	ConfigPath string

	opts        Options
	log         *slog.Logger
	ip          string // iproute2's ip
	dir         string
	removeDir   bool
	binDir      string
	prefix      string
	bridgeNetns string
	subnet      netip.Prefix
	svcSubnet   netip.Prefix // with ServiceNetwork
	clientNetns string       // with ServiceNetwork
	hosts       []*Host
	owner       ownerRecord

	mu      sync.Mutex // guards state-file writes and the hosts' process lists
	closing bool

	// setupMu is held while New builds the network, so a teardown started
	// by a signal in the middle waits for the step under way (which then
	// stops building) instead of racing it and missing a namespace.
	setupMu sync.Mutex

	closeOnce sync.Once
	closeErr  error
	sigStop   func() // ends the signal watch
}

// Bridge-side names are chosen here, in the cluster's own bridge namespace,
// so they need no prefix: the kernel's 15-byte limit on interface names is
// never at risk.
const bridgeName = "br0"

// New builds the cluster: namespaces, bridge, addresses, directories and
// the cluster file. It starts no daemon (see Host.StartTargetd). On error
// everything it made is removed again. Unless Options.Detach, SIGINT and
// SIGTERM tear it down (see Close) and are then raised again.
func New(ctx context.Context, o Options) (_ *Cluster, err error) {
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.Nodes < 1 || o.Nodes > 26 {
		return nil, fmt.Errorf("cluster: %d storage nodes: want 1 to 26", o.Nodes)
	}
	if o.ClusterName == "" {
		o.ClusterName = "test"
	}
	if o.IQNPrefix == "" {
		o.IQNPrefix = "iqn.2026-11.org.mhcodi"
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("cluster: needs root: it creates network namespaces, veths and a bridge")
	}
	c := &Cluster{opts: o, log: o.Logger}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.ip, err = ipTool(); err != nil {
		return nil, err
	}
	if c.binDir, err = findBinDir(o.BinDir); err != nil {
		return nil, err
	}
	rnd := make([]byte, 4)
	_, _ = rand.Read(rnd)
	c.prefix = o.Prefix
	if c.prefix == "" {
		c.prefix = "mhc" + hex.EncodeToString(rnd)[:5]
	}
	c.bridgeNetns = c.prefix + "-san"
	// 10.201.<random>.0/24: the subnet only lives inside this run's
	// namespaces, so it cannot clash with the machine's networks or with
	// another run; a random third octet just keeps logs of parallel runs
	// apart.
	c.subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 201, rnd[3], 0}), 24)
	if o.ServiceNetwork {
		c.svcSubnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 202, rnd[3], 0}), 24)
		c.clientNetns = c.prefix + "-client"
	}

	c.dir = o.Dir
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "mhcodi-cluster-"+c.prefix+"-"); err != nil {
			return nil, fmt.Errorf("cluster dir: %w", err)
		}
		c.removeDir = !o.Keep
	} else {
		if c.dir, err = filepath.Abs(c.dir); err != nil {
			return nil, fmt.Errorf("cluster dir: %w", err)
		}
		_, statErr := os.Stat(c.dir)
		// Only a directory this run made is removed: a caller's
		// existing directory may hold more than the cluster.
		c.removeDir = !o.Keep && errors.Is(statErr, os.ErrNotExist)
		if err := os.MkdirAll(c.dir, 0o755); err != nil {
			return nil, fmt.Errorf("cluster dir: %w", err)
		}
	}
	if o.ImageDir == "" {
		o.ImageDir = c.path("image")
		c.opts.ImageDir = o.ImageDir
	}
	if !o.Detach {
		start, _, err := procStart(os.Getpid())
		if err != nil {
			return nil, fmt.Errorf("own start time: %w", err)
		}
		c.owner = ownerRecord{PID: os.Getpid(), Start: start}
		c.watchSignals()
	}
	defer func() {
		if err != nil {
			if cerr := c.Close(); cerr != nil {
				c.log.Warn("cluster: teardown after failed setup", "err", cerr)
			}
		}
	}()

	names := make([]string, 0, o.Nodes+1)
	for i := range o.Nodes {
		names = append(names, "node-"+string(rune('a'+i)))
	}
	if o.Witness {
		names = append(names, "witness")
	}
	for i, n := range names {
		role := configs.RoleStorage
		if n == "witness" {
			role = configs.RoleWitness
		}
		addr := c.subnet.Addr().As4()
		addr[3] = byte(11 + i)
		a := netip.AddrFrom4(addr)
		c.hosts = append(c.hosts, &Host{
			c: c, Name: n, Role: role, Netns: c.prefix + "-" + n, Addr: a,
			SANAddr:  netip.AddrPortFrom(a, configs.DefaultSANPort),
			MgmtAddr: netip.AddrPortFrom(a, configs.DefaultMgmtPort),
			Veth:     fmt.Sprintf("v%d", i),
		})
	}
	for _, d := range []string{"logs", "run", "state", "links", "volumes"} {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return nil, fmt.Errorf("cluster dir: %w", err)
		}
	}
	for _, h := range c.hosts {
		for _, d := range []string{h.RunDir(), h.StateDir(), h.VolumeDir()} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, fmt.Errorf("host %s: %w", h.Name, err)
			}
		}
	}
	// The state is written before any namespace exists, so a run killed
	// half-way through setup still leaves Sweep a record of every name.
	if err := c.saveState(); err != nil {
		return nil, err
	}
	if err := c.setup(ctx); err != nil {
		return nil, err
	}
	c.log.Info("cluster up", "prefix", c.prefix, "subnet", c.subnet, "dir", c.dir, "config", c.ConfigPath)
	return c, nil
}

// setup builds the network and writes the cluster file, holding setupMu.
func (c *Cluster) setup(ctx context.Context) (err error) {
	c.setupMu.Lock()
	defer c.setupMu.Unlock()
	if err := c.buildNetwork(ctx); err != nil {
		return err
	}
	if c.opts.ServiceNetwork {
		if err := c.buildService(ctx); err != nil {
			return err
		}
	}
	cfg, err := c.writeConfig(&c.opts)
	if err != nil {
		return err
	}
	if c.opts.TLS {
		if err := c.initTLS(ctx, cfg); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Config, c.ConfigPath = cfg, cfg.Path
	return nil
}

func (c *Cluster) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// buildNetwork makes the bridge namespace and one namespace per host, each
// with a veth whose other end is a port of the bridge.
func (c *Cluster) buildNetwork(ctx context.Context) error {
	br := c.bridgeNetns
	steps := [][]string{
		{"netns", "add", br},
		{"-n", br, "link", "set", "lo", "up"},
		// STP stays off (the default), so a port forwards as soon as it is
		// up: Heal gives the link back at once.
		{"-n", br, "link", "add", bridgeName, "type", "bridge"},
		{"-n", br, "link", "set", bridgeName, "up"},
	}
	for _, h := range c.hosts {
		steps = append(steps,
			[]string{"netns", "add", h.Netns},
			[]string{"-n", h.Netns, "link", "set", "lo", "up"},
			[]string{"-n", br, "link", "add", h.Veth, "type", "veth", "peer", "name", "eth0", "netns", h.Netns},
			[]string{"-n", br, "link", "set", h.Veth, "master", bridgeName},
			[]string{"-n", br, "link", "set", h.Veth, "up"},
			[]string{"-n", h.Netns, "addr", "add", netip.PrefixFrom(h.Addr, c.subnet.Bits()).String(), "dev", "eth0"},
			[]string{"-n", h.Netns, "link", "set", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if c.isClosing() {
			return errors.New("cluster network: torn down while being built (signal)")
		}
		if err := runIP(ctx, c.ip, s...); err != nil {
			return fmt.Errorf("cluster network: %w", err)
		}
	}
	return nil
}

// path is a path inside the cluster's directory.
func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

// Dir is the cluster's directory.
func (c *Cluster) Dir() string { return c.dir }

// Prefix is the run's name prefix: every namespace is <prefix>-<name>.
func (c *Cluster) Prefix() string { return c.prefix }

// BridgeNetns is the namespace that holds the SAN bridge.
func (c *Cluster) BridgeNetns() string { return c.bridgeNetns }

// Subnet is the SAN's subnet.
func (c *Cluster) Subnet() netip.Prefix { return c.subnet }

// BinDir holds the binaries the cluster runs.
func (c *Cluster) BinDir() string { return c.binDir }

// Bin is the path of a binary in BinDir.
func (c *Cluster) Bin(name string) string { return filepath.Join(c.binDir, name) }

// Hosts lists the hosts, storage nodes first, then the witness.
func (c *Cluster) Hosts() []*Host { return append([]*Host(nil), c.hosts...) }

// Host returns the host called name, or nil.
func (c *Cluster) Host(name string) *Host {
	for _, h := range c.hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// Close tears the cluster down: it stops every process it started or
// tracks (SIGTERM, then SIGKILL), deletes the namespaces and the bridge,
// and removes the directory unless Keep. It reports, and leaves alone, any
// process still in a namespace that it neither started nor tracks: that
// is a leak for the caller to fix (Host.Track it). Close is idempotent;
// every later call returns the first result.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.teardown() })
	return c.closeErr
}

func (c *Cluster) teardown() error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	if c.sigStop != nil {
		// Not while a signal is being handled: that goroutine is the
		// caller then, and raises the signal again itself.
		c.sigStop()
	}
	// Wait for a New still building (only when a signal interrupts it).
	c.setupMu.Lock()
	//lint:ignore SA2001 a barrier: it only waits for setup to let go
	c.setupMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	errs = append(errs, c.stopFenced()...)
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, h := range c.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.stopAll(5 * time.Second); err != nil {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, h := range c.hosts {
		if !netnsExists(h.Netns) {
			continue
		}
		if pids, err := netnsPIDs(ctx, c.ip, h.Netns); err == nil && len(pids) > 0 {
			errs = append(errs, fmt.Errorf("host %s: processes %v still run in netns %s that the cluster neither started nor tracks (Host.Track them); left alone", h.Name, pids, h.Netns))
		}
		if err := deleteNetns(ctx, c.ip, h.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := deleteNetns(ctx, c.ip, c.bridgeNetns); err != nil {
		errs = append(errs, err)
	}
	if c.clientNetns != "" {
		if err := deleteNetns(ctx, c.ip, c.clientNetns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(registryPath(c.prefix)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("registry: %w", err))
	}
	if c.removeDir && c.dir != "" {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", c.dir, err))
		}
	} else if c.dir != "" {
		_ = c.saveStateLocked(false)
	}
	err := errors.Join(errs...)
	c.log.Info("cluster down", "prefix", c.prefix, "kept", !c.removeDir, "dir", c.dir, "err", err)
	return err
}

// watchSignals makes SIGINT and SIGTERM tear the cluster down before the
// process dies of them: without it a ^C during `go test` ends the test
// binary before any t.Cleanup runs, and the namespaces (bind mounts in
// /run/netns) outlive it. After teardown the signal is raised again with
// this cluster no longer listening, so it reaches whoever else listens
// (another cluster in the same process, still tearing down) or, when no
// one does, kills the process as if never caught: `go test` still reports
// the interrupt. c.sigStop stops watching.
func (c *Cluster) watchSignals() {
	ch := make(chan os.Signal, 1)
	for _, s := range []os.Signal{syscall.SIGINT, syscall.SIGTERM} {
		// A signal ignored at start (nohup, a background job) stays so.
		if !signal.Ignored(s) {
			signal.Notify(ch, s)
		}
	}
	quit := make(chan struct{})
	var once sync.Once
	stop := func() {
		once.Do(func() {
			signal.Stop(ch)
			close(quit)
		})
	}
	// Set before the watcher runs: teardown, which may run on it, reads it.
	c.sigStop = stop
	go func() {
		select {
		case <-quit:
			return
		case sig := <-ch:
			c.log.Warn("signal: tearing the cluster down", "signal", sig, "prefix", c.prefix)
			if err := c.Close(); err != nil {
				c.log.Warn("cluster: teardown on signal", "err", err)
			}
			stop()
			s, _ := sig.(syscall.Signal)
			_ = syscall.Kill(os.Getpid(), s)
			// Still alive: someone else handles it. Give them time to
			// tear down too, then end with the shell's code for it.
			time.Sleep(30 * time.Second)
			os.Exit(128 + int(s))
		}
	}()
}
