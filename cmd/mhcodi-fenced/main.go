// Command mhcodi-fenced keeps every guest of the cluster running on one
// host only: the ledger member, the fencing API between nodes and for the
// local CLI, the monitor, the lease keeper and the guests' channels. See
// package fencing/fenced.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mhcodi/mhcodi/internal/pidlock"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/certs"
	"github.com/mhcodi/mhcodi/fencing/fenced"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/fencing/member"
	"github.com/mhcodi/mhcodi/fencing/ops"
	"github.com/mhcodi/mhcodi/internal/cliflag"
	"github.com/mhcodi/mhcodi/internal/daemon"
	"github.com/mhcodi/mhcodi/internal/sdnotify"
	"github.com/mhcodi/mhcodi/targetd/controlapi"
)

// DefaultMetricsPort is where fenced serves Prometheus metrics on the
// node's management address (targetd has 9595).
const DefaultMetricsPort = "9596"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("mhcodi-fenced", flag.ContinueOnError)
	cfgPath := daemon.ConfigFlag(fs)
	node := fs.String("node", "", "this node's name in the cluster file (required)")
	witness := fs.Bool("witness", false, "run as the cluster's witness: a ledger member only, no guests (required for, and only for, a node whose role is witness)")
	socket := fs.String("socket", "", "the local CLI's root-only socket (default /run/mhcodi/fenced-<node>.sock)")
	targetdSocket := fs.String("targetd-socket", "", "targetd's control socket (default /run/mhcodi/targetd-<node>.sock)")
	logLevel := daemon.LogLevelFlag(fs)
	metricsAddr := fs.String("metrics", "", "serve Prometheus metrics on ip:port (default: the node's management address, port "+DefaultMetricsPort+"; \"off\" disables)")
	if code, ok := cliflag.Parse(fs, args, os.Stdout); !ok {
		return code
	}
	log, ok := daemon.Logger("mhcodi-fenced", *logLevel, os.Stderr)
	if !ok {
		return 2
	}
	if *node == "" {
		fmt.Fprintln(os.Stderr, "mhcodi-fenced: --node is required")
		return 2
	}
	if *socket == "" {
		*socket = "/run/mhcodi/fenced-" + *node + ".sock"
	}
	if *targetdSocket == "" {
		*targetdSocket = "/run/mhcodi/targetd-" + *node + ".sock"
	}
	cfg, err := configs.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mhcodi-fenced: %v\n", err)
		return 1
	}
	if err := serve(cfg, *node, *witness, *socket, *targetdSocket, *metricsAddr, log); err != nil {
		log.Error("mhcodi-fenced failed", "err", err)
		return 1
	}
	return 0
}

func serve(cfg *configs.Config, node string, witness bool, socket, targetdSocket, metricsAddr string, log *slog.Logger) error {
	n, ok := cfg.Node(node)
	if !ok {
		return fmt.Errorf("node %q is not in %s", node, cfg.Path)
	}
	// One fenced per state directory: a second one (two nodes of a test
	// cluster given one file, or a fenced started twice) would otherwise
	// hang in etcd's start on the member's database lock, deaf to SIGTERM.
	stateDir := cfg.Fencing.StateDir
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("fencing.state_dir: %w", err)
	}
	unlock, err := pidlock.Lock(filepath.Join(stateDir, "fenced.lock"))
	var busy *pidlock.BusyError
	if errors.As(err, &busy) {
		return fmt.Errorf("fencing.state_dir %s is in use by another mhcodi-fenced (pid %d): every node needs its own (on one machine, give each node its own copy of the cluster file)", stateDir, busy.PID)
	}
	if err != nil {
		return fmt.Errorf("fencing.state_dir: %w", err)
	}
	defer unlock()
	tlsDir := cfg.Security.TLSDir
	serverTLS, err := certs.ServerTLS(tlsDir, node)
	if err != nil {
		return err
	}
	clientTLS, err := certs.ClientTLS(tlsDir, node)
	if err != nil {
		return err
	}
	o := fenced.Options{
		Config: cfg, Node: node, Witness: witness,
		Ledger:    ledgerStarter(cfg, node, clientTLS.Clone(), log),
		ServerTLS: serverTLS, ClientTLS: clientTLS, PeerName: certs.PeerName,
		Logger: log,
	}
	if !witness {
		drv, err := hypervisor.New(cfg, node, hypervisor.Options{Logger: log})
		if err != nil {
			return err
		}
		o.Driver = drv
		o.Targetd = controlapi.NewControlClient(targetdSocket)
		o.NewOperator = func(env ops.Env) fenced.Operator { return ops.New(env, ops.WithLogger(log)) }
	}
	s, err := fenced.New(o)
	if err != nil {
		return err
	}

	addr := n.MgmtAddress.AddrPort(configs.DefaultMgmtPort).String()
	tln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("API listener: %w", err)
	}
	uln, err := fenced.ListenUnix(socket)
	if err != nil {
		tln.Close()
		return err
	}
	defer os.Remove(socket)
	if metricsAddr == "" {
		metricsAddr = net.JoinHostPort(n.MgmtAddress.IP.String(), DefaultMetricsPort)
	}
	if metricsAddr != "off" {
		mln, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			tln.Close()
			uln.Close()
			return fmt.Errorf("metrics: %w (use --metrics off to go without)", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.Registry(), promhttp.HandlerOpts{}))
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go msrv.Serve(mln)
		defer msrv.Close()
		log.Info("metrics", "listen", mln.Addr().String())
	}

	notify := sdnotify.New(log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := daemon.Signals()
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGHUP {
				log.Warn("SIGHUP: fenced does not reload; restart it to read the cluster file again (guests keep running)")
				continue
			}
			log.Info("stopping: the API, the loops and the ledger member; guests keep running", "signal", sig.String())
			notify.Stopping()
			cancel()
			return
		}
	}()
	maxAge := 5*cfg.Fencing.MonitorInterval + 30*time.Second
	log.Info("mhcodi-fenced starting", "node", node, "listen", addr, "socket", socket, "witness", witness,
		"quorum_mode", fenced.QuorumMode(cfg), "auto_failover", cfg.Fencing.AutoFailover)
	err = s.Run(ctx, fenced.RunOptions{
		TLS: tln, ServerTLS: serverTLS, Local: uln,
		Ready: func() {
			notify.Ready()
			go notify.Watchdog(func() bool {
				// The local socket answering proves the API is not
				// wedged, the monitor's rounds that the loops are not.
				hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
				defer hcancel()
				cc, _ := api.NewUnixClient(node, socket).(api.ConfigClient)
				_, err := cc.Config(hctx)
				return err == nil && s.Healthy(maxAge)
			})
		},
	})
	signal.Stop(sigs)
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// ledgerStarter starts the embedded member (or connects to the external
// etcd of fencing.etcd.endpoints) and the ledger's Store on its client.
func ledgerStarter(cfg *configs.Config, node string, clientTLS *tls.Config, log *slog.Logger) fenced.LedgerStarter {
	ttl := cfg.Timeouts.LeaseTTL
	return fenced.LedgerStarterFunc(func(ctx context.Context) (fenced.Member, ledger.Store, error) {
		if eps := cfg.Fencing.Etcd.Endpoints; len(eps) > 0 {
			cli, err := clientv3.New(clientv3.Config{Endpoints: eps, TLS: clientTLS, DialTimeout: 2 * time.Second, Logger: member.ZapLogger(log, zapcore.WarnLevel)})
			if err != nil {
				return nil, nil, fmt.Errorf("external etcd: %w", err)
			}
			st, err := ledger.NewEtcd(cli, cfg.Cluster.Name, node, ttl, log)
			if err != nil {
				cli.Close()
				return nil, nil, err
			}
			return nil, closeBoth{st, cli}, nil
		}
		m, err := member.Start(ctx, member.Options{Config: cfg, Node: node, Log: log})
		if err != nil {
			return nil, nil, err
		}
		st, err := ledger.NewEtcd(m.Client(), cfg.Cluster.Name, node, ttl, log)
		if err != nil {
			m.Stop()
			return nil, nil, err
		}
		return m, st, nil
	})
}

// The embedded member is what fenced expects of one.
var _ fenced.Member = (*member.Member)(nil)

// closeBoth is an external etcd's Store that also closes its client.
type closeBoth struct {
	ledger.Store
	cli *clientv3.Client
}

func (c closeBoth) Close() error {
	err := c.Store.Close()
	if cerr := c.cli.Close(); err == nil {
		err = cerr
	}
	return err
}
