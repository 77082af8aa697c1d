// Package sdnotify is how mhcodi's daemons speak sd_notify to systemd
// (Type=notify units, with a watchdog): ready, reloading, stopping, and
// petting the watchdog while a health check passes. Outside systemd every
// call is a no-op.
package sdnotify

import (
	"log/slog"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends a daemon's state to systemd.
type Notifier struct {
	log  *slog.Logger
	stop chan struct{}
	once sync.Once
}

// New returns a Notifier that logs failed notifications to log.
func New(log *slog.Logger) *Notifier { return &Notifier{log: log, stop: make(chan struct{})} }

func (n *Notifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

// Ready says the daemon serves.
func (n *Notifier) Ready() { n.send(daemon.SdNotifyReady) }

// Reloading says the daemon re-reads its configuration (send Ready after).
func (n *Notifier) Reloading() { n.send(daemon.SdNotifyReloading) }

// Stopping says the daemon is shutting down, and ends Watchdog.
func (n *Notifier) Stopping() {
	n.send(daemon.SdNotifyStopping)
	n.once.Do(func() { close(n.stop) })
}

// Watchdog pets systemd's watchdog at half its interval for as long as
// healthy says so, until Stopping; a daemon whose main loop is wedged
// stops petting and systemd restarts it. Without WatchdogSec it returns
// at once.
func (n *Notifier) Watchdog(healthy func() bool) {
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
