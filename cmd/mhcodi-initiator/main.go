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
	"os"
	"syscall"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/initiator"
	"github.com/mhcodi/mhcodi/initiator/netlink"
	"github.com/mhcodi/mhcodi/initiator/openiscsi"
	"github.com/mhcodi/mhcodi/internal/cliflag"
	"github.com/mhcodi/mhcodi/internal/daemon"
	"github.com/mhcodi/mhcodi/internal/sdnotify"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("mhcodi-initiator", flag.ContinueOnError)
	cfgPath := daemon.ConfigFlag(fs)
	node := fs.String("node", "", "this node's name in the cluster file (required)")
	stateDir := fs.String("state-dir", initiator.DefaultStateDir, "`directory` of initiator-<node>.json, the state that \"mhcodi import status\" shows")
	interval := fs.Duration("interval", time.Second, "time between two looks at sessions and links")
	sysRoot := fs.String("sysfs", "/sys", "where sysfs is mounted")
	logLevel := daemon.LogLevelFlag(fs)
	if code, ok := cliflag.Parse(fs, args, os.Stdout); !ok {
		return code
	}
	log, ok := daemon.Logger("mhcodi-initiator", *logLevel, os.Stderr)
	if !ok {
		return 2
	}
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

	sigs := daemon.Signals()
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
				daemon.Reload(notify, log, *cfgPath, im.Reload, "reload failed; keeping the previous configuration", nil)
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
