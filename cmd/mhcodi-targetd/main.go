// Command mhcodi-targetd exports a storage node's guest disk legs over
// iSCSI. See package targetd.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/internal/cliflag"
	"github.com/mhcodi/mhcodi/internal/daemon"
	"github.com/mhcodi/mhcodi/internal/sdnotify"
	"github.com/mhcodi/mhcodi/targetd"
	"github.com/mhcodi/mhcodi/targetd/controlapi"
)

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, strings.ToLower(v)); return nil }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("mhcodi-targetd", flag.ContinueOnError)
	cfgPath := daemon.ConfigFlag(fs)
	node := fs.String("node", "", "this node's name in the cluster file (required)")
	stateDir := fs.String("state-dir", "/var/lib/mhcodi", "fencing state and write log")
	control := fs.String("control-socket", "", "control API socket (default /run/mhcodi/targetd-<node>.sock)")
	listen := fs.String("listen", "", "override the node's SAN address (ip:port)")
	logLevel := daemon.LogLevelFlag(fs)
	nopInterval := fs.Duration("nop-interval", 5*time.Second, "ping an initiator quiet for this long (NOP-In)")
	nopTimeout := fs.Duration("nop-timeout", 10*time.Second, "drop a connection whose initiator does not answer a ping within this")
	metricsAddr := fs.String("metrics", "", "serve Prometheus metrics on ip:port (default: the node's management address, port 9595; \"off\" disables)")
	var extra stringList
	fs.Var(&extra, "allow-initiator", "also admit this initiator `IQN`, without CHAP (repeatable; for conformance tools)")
	if code, ok := cliflag.Parse(fs, args, os.Stdout); !ok {
		return code
	}
	log, ok := daemon.Logger("mhcodi-targetd", *logLevel, os.Stderr)
	if !ok {
		return 2
	}
	if *node == "" {
		fmt.Fprintln(os.Stderr, "mhcodi-targetd: --node is required")
		return 2
	}
	if *control == "" {
		*control = "/run/mhcodi/targetd-" + *node + ".sock"
	}
	cfg, err := configs.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mhcodi-targetd: %v\n", err)
		return 1
	}
	d, err := targetd.New(targetd.Options{
		Config: cfg, Node: *node, StateDir: *stateDir, Listen: *listen,
		ExtraInitiators: extra, Logger: log,
		NopInterval: *nopInterval, NopTimeout: *nopTimeout,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "mhcodi-targetd: %v\n", err)
		return 1
	}
	ln, err := d.Listen()
	if err != nil {
		fmt.Fprintf(os.Stderr, "mhcodi-targetd: %v\n", err)
		d.Shutdown(context.Background())
		return 1
	}
	cln, err := targetd.ListenControl(*control)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mhcodi-targetd: %v\n", err)
		ln.Close()
		d.Shutdown(context.Background())
		return 1
	}
	ctl := &http.Server{Handler: d.ControlHandler(), ReadHeaderTimeout: 10 * time.Second}
	go ctl.Serve(cln)
	if *metricsAddr == "" {
		n, _ := cfg.Node(*node)
		*metricsAddr = net.JoinHostPort(n.MgmtAddress.IP.String(), "9595")
	}
	if *metricsAddr != "off" {
		mln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "mhcodi-targetd: metrics: %v (use --metrics off to go without)\n", err)
			ln.Close()
			cln.Close()
			d.Shutdown(context.Background())
			return 1
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(d.Registry(), promhttp.HandlerOpts{}))
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go msrv.Serve(mln)
		defer msrv.Close()
		log.Info("metrics", "listen", mln.Addr().String())
	}
	notify := sdnotify.New(log)

	sigs := daemon.Signals()
	served := make(chan error, 1)
	go func() { served <- d.Serve(ln) }()
	log.Info("mhcodi-targetd ready", "listen", ln.Addr().String(), "control", *control, "exports", len(d.Exports()))
	notify.Ready()
	go notify.Watchdog(func() bool {
		// The control socket answering proves the daemon is not wedged.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := controlapi.NewControlClient(*control).Exports(ctx)
		return err == nil
	})
	for {
		select {
		case err := <-served:
			ctl.Close()
			if err != nil {
				log.Error("serving failed", "err", err)
				d.Shutdown(context.Background())
				return 1
			}
			return 0
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				daemon.Reload(notify, log, *cfgPath, d.Reload, "reload failed; still serving the previous configuration",
					func() []any { return []any{"exports", len(d.Exports())} })
				continue
			}
			log.Info("stopping: finishing in-flight commands", "signal", sig.String())
			notify.Stopping()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := d.Shutdown(ctx)
			cancel()
			ctl.Close()
			os.Remove(*control)
			if err != nil && !errors.Is(err, context.Canceled) {
				log.Warn("shutdown incomplete", "err", err)
				return 1
			}
			log.Info("stopped")
			return 0
		}
	}
}
