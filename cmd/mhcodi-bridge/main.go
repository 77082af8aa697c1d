// Command mhcodi-bridge serves the remote legs of one guest's disks to
// QEMU as NBD over unix sockets, reaching each leg with a userspace iSCSI
// initiator. See package initiator/bridge.
//
//	mhcodi-bridge --config C --node N --guest G --socket-dir D [--io-timeout 5s]
//
// For every disk of G and every leg not on N it serves D/<disk>-<node>.sock
// (export name: the target IQN, or the default export) and keeps
// D/bridge.json up to date. It prints "mhcodi-bridge: ready" on stderr
// once every socket listens, and tells systemd READY=1 when run by it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	systemd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/initiator/bridge"
	"github.com/mhcodi/mhcodi/internal/cliflag"
	"github.com/mhcodi/mhcodi/internal/daemon"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("mhcodi-bridge", flag.ContinueOnError)
	cfgPath := daemon.ConfigFlag(fs)
	node := fs.String("node", "", "the node this bridge runs on; its own legs are not served (required)")
	guest := fs.String("guest", "", "the guest whose remote legs are served (required)")
	socketDir := fs.String("socket-dir", "", "directory for <disk>-<node>.sock and bridge.json (required)")
	d := bridge.DefaultPolicy()
	staleNodes := fs.String("stale-nodes", "", "comma-separated nodes whose legs the ledger marks stale: while down, their requests fail at once")
	ioTimeout := fs.Duration("io-timeout", d.IOTimeout, "a request waits this long for an iSCSI session, then fails with EIO")
	backoffMin := fs.Duration("backoff-min", d.BackoffMin, "first delay between failed logins")
	backoffMax := fs.Duration("backoff-max", d.BackoffMax, "longest delay between failed logins")
	refusedBackoff := fs.Duration("refused-backoff", d.RefusedBackoff, "delay after the target refused the login (CHAP, ACL, fencing)")
	cmdTimeout := fs.Duration("cmd-timeout", 30*time.Second, "a command on a live session taking longer ends the connection")
	loginTimeout := fs.Duration("login-timeout", 5*time.Second, "bound on connecting and logging in")
	nopInterval := fs.Duration("nop-interval", 2*time.Second, "send a NOP-Out ping this often")
	nopTimeout := fs.Duration("nop-timeout", 3*time.Second, "drop a connection whose ping is unanswered this long")
	headerDigest := fs.Bool("header-digest", false, "offer CRC32C header digests")
	logLevel := daemon.LogLevelFlag(fs)
	guestPIDFile := fs.String("guest-pidfile", "", "the guest's qemu pid file: the bridge ends once that qemu is gone (a guest that powered off by itself)")
	if code, ok := cliflag.Parse(fs, args, os.Stdout); !ok {
		return code
	}
	base, ok := daemon.Logger("mhcodi-bridge", *logLevel, os.Stderr)
	if !ok {
		return 2
	}
	for name, v := range map[string]string{"--node": *node, "--guest": *guest, "--socket-dir": *socketDir} {
		if v == "" {
			fmt.Fprintf(os.Stderr, "mhcodi-bridge: %s is required\n", name)
			return 2
		}
	}
	log := base.With("node", *node, "guest", *guest)
	cfg, err := configs.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mhcodi-bridge: %v\n", err)
		return 1
	}
	b, err := bridge.New(bridge.Options{
		Config: cfg, Node: *node, Guest: *guest, SocketDir: *socketDir,
		Policy: bridge.PolicyConfig{IOTimeout: *ioTimeout, BackoffMin: *backoffMin,
			BackoffMax: *backoffMax, RefusedBackoff: *refusedBackoff},
		CmdTimeout: *cmdTimeout, LoginTimeout: *loginTimeout,
		PingInterval: *nopInterval, PingTimeout: *nopTimeout, HeaderDigest: *headerDigest,
		StaleNodes: splitList(*staleNodes), Log: log,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "mhcodi-bridge: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *guestPIDFile != "" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go followGuest(ctx, *guestPIDFile, log, cancel)
	}
	if err := b.Listen(); err != nil {
		fmt.Fprintf(os.Stderr, "mhcodi-bridge: %v\n", err)
		return 1
	}
	for _, l := range b.Legs() {
		log.Info("serving leg", "leg", l.Name, "socket", l.Socket, "target", l.Info.TargetIQN, "portal", l.Portal)
	}
	// Not under systemd, SdNotify does nothing and says so.
	if _, err := systemd.SdNotify(false, systemd.SdNotifyReady); err != nil {
		log.Warn("sd_notify READY failed", "err", err)
	}
	fmt.Fprintln(os.Stderr, "mhcodi-bridge: ready")
	err = b.Serve(ctx)
	systemd.SdNotify(false, systemd.SdNotifyStopping)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mhcodi-bridge: %v\n", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// followGuest ends the bridge (cancel) once the guest's qemu is gone: its
// pid file, once seen, names a dead process or disappeared. Until qemu
// has written it (the bridge starts first) there is nothing to follow.
func followGuest(ctx context.Context, pidfile string, log *slog.Logger, cancel context.CancelFunc) {
	seen := false
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := os.ReadFile(pidfile)
		if err != nil {
			if seen {
				log.Info("the guest's qemu is gone (its pid file was removed); stopping")
				cancel()
				return
			}
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			continue
		}
		seen = true
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			log.Info("the guest's qemu is gone; stopping", "pid", pid)
			cancel()
			return
		}
	}
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
