package main

import (
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifier speaks sd_notify to systemd (Type=notify units); outside
// systemd every call is a no-op.
type notifier struct {
	log  *slog.Logger
	stop chan struct{}
}

func newNotifier(log *slog.Logger) *notifier { return &notifier{log: log, stop: make(chan struct{})} }

func (n *notifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

func (n *notifier) ready()     { n.send(daemon.SdNotifyReady) }
func (n *notifier) reloading() { n.send(daemon.SdNotifyReloading) }
func (n *notifier) stopping() {
	n.send(daemon.SdNotifyStopping)
	close(n.stop)
}

// watchdog pets systemd's watchdog at half its interval for as long as
// healthy says so; a daemon whose accept loop or control API is wedged
// stops petting and systemd restarts it.
func (n *notifier) watchdog(healthy func() bool) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			if healthy() {
				n.send(daemon.SdNotifyWatchdog)
			} else {
				n.log.Error("health check failed; not petting the watchdog")
			}
		}
	}
}
