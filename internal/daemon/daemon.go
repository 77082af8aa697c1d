// Package daemon is what mhcodi's daemons (mhcodi-targetd, -initiator,
// -fenced, -bridge) share around their own work: the --config and
// --log-level flags, the logger, environment defaults, the signals they
// listen to, and answering SIGHUP by reloading the cluster file while
// telling systemd (sd_notify RELOADING, then READY). Parsing the command
// line itself is package cliflag's.
package daemon

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/internal/sdnotify"
)

// EnvOr returns the environment variable k, or def when it is unset or
// empty.
func EnvOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// ConfigFlag adds --config to fs: the cluster file, $MHCODI_CONFIG when
// set, else configs.DefaultPath.
func ConfigFlag(fs *flag.FlagSet) *string {
	return fs.String("config", EnvOr("MHCODI_CONFIG", configs.DefaultPath), "cluster file")
}

// LogLevelFlag adds --log-level to fs.
func LogLevelFlag(fs *flag.FlagSet) *string {
	return fs.String("log-level", "info", "debug, info, warn or error")
}

// Logger returns the text logger on stderr at level (a --log-level value).
// A level it does not know is written to stderr as "<program>:
// --log-level: <error>" and ok is false: the daemon exits with status 2.
func Logger(program, level string, stderr io.Writer) (log *slog.Logger, ok bool) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		fmt.Fprintf(stderr, "%s: --log-level: %v\n", program, err)
		return nil, false
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: l})), true
}

// Signals delivers SIGHUP, SIGTERM and SIGINT; signal.Stop ends it.
func Signals() chan os.Signal {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	return sigs
}

// Reload answers SIGHUP: it tells systemd the daemon reloads, loads the
// cluster file at path again and hands it to apply. A failure (of either)
// is logged as failed with the error, the daemon keeping what it had; a
// success is logged as "configuration reloaded" with the arguments done
// returns (done may be nil). Then it tells systemd the daemon is ready.
func Reload(notify *sdnotify.Notifier, log *slog.Logger, path string, apply func(*configs.Config) error, failed string, done func() []any) {
	notify.Reloading()
	cfg, err := configs.Load(path)
	if err == nil {
		err = apply(cfg)
	}
	if err != nil {
		log.Error(failed, "err", err)
	} else {
		var args []any
		if done != nil {
			args = done()
		}
		log.Info("configuration reloaded", args...)
	}
	notify.Ready()
}
