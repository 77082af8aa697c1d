// Command mhcodi-initiator makes /dev/mhcodi/<guest>/<disk>/<node> true on
// one node: it imports the legs of the guests that may run here from the
// other nodes (open-iscsi or iscsinl, per initiator.backend), keeps them
// logged in, and keeps every leg's link pointing at its device, local or
// remote. It publishes each leg's state in <state-dir>/initiator-<node>.json
// for `mhcodi import status`. See package initiator.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/initiator"
	"github.com/mhcodi/mhcodi/initiator/netlink"
	"github.com/mhcodi/mhcodi/initiator/openiscsi"
	"github.com/mhcodi/mhcodi/internal/cliflag"
	"github.com/mhcodi/mhcodi/internal/sdnotify"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("mhcodi-initiator", flag.ContinueOnError)
	cfgPath := fs.String("config", envOr("MHCODI_CONFIG", configs.DefaultPath), "cluster file")
	node := fs.String("node", "", "this node's name in the cluster file (required)")
	stateDir := fs.String("state-dir", initiator.DefaultStateDir, "`directory` of initiator-<node>.json, the state that \"mhcodi import status\" shows")
	interval := fs.Duration("interval", time.Second, "time between two looks at sessions and links")
	sysRoot := fs.String("sysfs", "/sys", "where sysfs is mounted")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if code, ok := cliflag.Parse(fs, args, os.Stdout); !ok {
		return code
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "mhcodi-initiator: --log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if *node == "" {
		fmt.Fprintln(os.Stderr, "mhcodi-initiator: --node is required")
		return 2
	}
	cfg, err := configs.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mhcodi-initiator: %v\n", err)
		return 1
	}
	sysfs := initiator.Sysfs{Root: *sysRoot}
	var backend initiator.Backend
	switch cfg.Initiator.Backend {
	case configs.InitiatorOpenISCSI:
		b, err := openiscsi.New(sysfs)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err = openiscsi.Check(ctx, b)
			cancel()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "mhcodi-initiator: open-iscsi: %v\n", err)
			return 1
		}
		backend = b
	case configs.InitiatorNetlink:
		backend = netlink.New(sysfs)
	}
	im, err := initiator.New(initiator.Options{
		Config: cfg, Node: *node, Backend: backend, Interval: *interval,
		StateFile: initiator.StatePath(*stateDir, *node), Logger: log,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "mhcodi-initiator: %v\n", err)
		return 1
	}
	notify := sdnotify.New(log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- im.Run(ctx) }()
	log.Info("mhcodi-initiator ready", "node", *node, "backend", cfg.Initiator.Backend,
		"link_dir", cfg.Initiator.LinkDir, "state", initiator.StatePath(*stateDir, *node))
	notify.Ready()
	go notify.Watchdog(im.Healthy)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	for {
		select {
		case err := <-ran:
			if err != nil {
				log.Error("stopped", "err", err)
				return 1
			}
			return 0
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				notify.Reloading()
				ncfg, err := configs.Load(*cfgPath)
				if err == nil {
					err = im.Reload(ncfg)
				}
				if err != nil {
					log.Error("reload failed; keeping the previous configuration", "err", err)
				} else {
					log.Info("configuration reloaded")
				}
				notify.Ready()
				continue
			}
			// Sessions and links stay: guests keep their disks while
			// the daemon is down or being upgraded.
			log.Info("stopping; sessions and links are left in place", "signal", sig.String())
			notify.Stopping()
			cancel()
			<-ran
			return 0
		}
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
