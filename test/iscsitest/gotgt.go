package iscsitest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gostor/gotgt/pkg/config"
	_ "github.com/gostor/gotgt/pkg/port/iscsit" // registers the "iscsi" target driver
	"github.com/gostor/gotgt/pkg/scsi"
	_ "github.com/gostor/gotgt/pkg/scsi/backingstore" // registers the "file" backing store
	"github.com/sirupsen/logrus"
)

// gotgt keeps its LU map, its SCSI target service (a sync.Once singleton)
// and its logger (logrus's standard logger) in package globals, and its
// driver listens on ":port" with os.Exit(1) if that fails. Worse, every
// driver numbers its first target TID 0 in the shared service, so a second
// gotgt in the same process answers logins with the first one's (deleted)
// LU: TEST UNIT READY fails NOT READY, "becoming ready" (measured). Hence
// the one piece of mutable package state here: gotgtStarted lets StartGotgt
// run once per process. To restart gotgt, run it in a child process
// (StartGotgtProcess).
var gotgtStarted atomic.Bool

// GotgtOptions configures StartGotgt.
type GotgtOptions struct {
	// IQN is the target name; DefaultIQN + "-gotgt" if empty.
	IQN string
	// LogLevel is gotgt's (logrus's) level, copied into Logger: "warn" if
	// empty; "info" logs every connection, "debug" every PDU.
	LogLevel string
	// Logger receives progress and gotgt's own log; slog.Default() if nil.
	Logger *slog.Logger
}

// gotgtLUN is the LUN gotgt exports the file as, as gotgt's own CI does.
const gotgtLUN = 0

// Gotgt is gotgt v0.2.2 running inside this process.
type Gotgt struct {
	drv      scsi.SCSITargetDriver
	portal   string
	iqn      string
	deviceID uint64
	runDone  chan struct{} // closed when the driver's accept loop returns
	log      *slog.Logger
	stopOnce onceErr
}

// StartGotgt starts gotgt v0.2.2 in this process, exporting file as LUN 0
// of one target, the way gotgt's cmd/daemon.go does. It can be called once
// per process (see gotgtStarted); a second call fails.
//
// gotgt listens on every interface (its driver takes only a port), but its
// one portal is 127.0.0.1:port and a login is matched to a portal by the
// connection's local address, so a login arriving on any other address
// finds no target. Its PID is 0 and its peak RSS is this process's.
func StartGotgt(ctx context.Context, file string, o GotgtOptions) (*Gotgt, error) {
	if !gotgtStarted.CompareAndSwap(false, true) {
		return nil, errors.New("gotgt: already started once in this process, and its global state makes a second instance serve the first one's target; use StartGotgtProcess to run another")
	}
	return startGotgt(ctx, file, o)
}

func startGotgt(ctx context.Context, file string, o GotgtOptions) (*Gotgt, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.IQN == "" {
		o.IQN = DefaultIQN + "-gotgt"
	}
	if err := routeLogrus(o.Logger, o.LogLevel); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, fmt.Errorf("gotgt: backing file: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("gotgt: backing file: %w", err)
	}
	port, err := freeWildcardPort()
	if err != nil {
		return nil, err
	}
	portal := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	// deviceID becomes the disk's NAA WWN and serial; it must be below 2^60.
	const deviceID = 1000
	cfg := &config.Config{
		Storages: []config.BackendStorage{{
			DeviceID: deviceID, Path: "file:" + abs, Online: true, BlockShift: 9,
		}},
		ISCSIPortals: []config.ISCSIPortalInfo{{ID: 0, Portal: portal}},
		ISCSITargets: map[string]config.ISCSITarget{o.IQN: {
			TPGTs: map[string][]uint64{"1": {0}},
			LUNs:  map[string]uint64{strconv.Itoa(gotgtLUN): deviceID},
		}},
	}
	if err := scsi.InitSCSILUMap(cfg); err != nil {
		return nil, fmt.Errorf("gotgt: LU map for %s: %w", abs, err)
	}
	g := &Gotgt{portal: portal, iqn: o.IQN, deviceID: deviceID, runDone: make(chan struct{}), log: o.Logger}
	drv, err := scsi.NewTargetDriver("iscsi", scsi.NewSCSITargetService())
	if err != nil {
		g.forgetLU()
		return nil, fmt.Errorf("gotgt: driver: %w", err)
	}
	g.drv = drv
	if err := drv.NewTarget(o.IQN, cfg); err != nil {
		g.forgetLU()
		return nil, fmt.Errorf("gotgt: target %s: %w", o.IQN, err)
	}
	go func() {
		defer close(g.runDone)
		if err := drv.Run(port); err != nil {
			g.log.Warn("gotgt driver stopped", "err", err)
		}
	}()
	if err := waitListening(ctx, portal, g.runDone, 10*time.Second); err != nil {
		return nil, errors.Join(fmt.Errorf("gotgt on %s: %w", portal, err), g.stop())
	}
	o.Logger.Info("gotgt started", "portal", portal, "iqn", o.IQN, "file", abs)
	return g, nil
}

// freeWildcardPort finds a port free on every interface, since that is
// what gotgt binds; if another process takes it before gotgt does, gotgt
// calls os.Exit(1), so check as late as possible.
func freeWildcardPort() (int, error) {
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		return 0, fmt.Errorf("gotgt: free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("gotgt: free port: %w", err)
	}
	return port, nil
}

// routeLogrus sends logrus's standard logger (gotgt's) into log at level,
// replacing whatever an earlier start installed.
func routeLogrus(log *slog.Logger, level string) error {
	if level == "" {
		level = "warn"
	}
	lv, err := logrus.ParseLevel(level)
	if err != nil {
		return fmt.Errorf("gotgt: log level: %w", err)
	}
	std := logrus.StandardLogger()
	std.SetLevel(lv)
	std.SetOutput(io.Discard) // the hook below is the only output
	hooks := make(logrus.LevelHooks)
	hooks.Add(slogHook{log.With("target", "gotgt")})
	std.ReplaceHooks(hooks)
	return nil
}

// slogHook turns logrus entries into slog records of the same level.
type slogHook struct{ log *slog.Logger }

func (slogHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h slogHook) Fire(e *logrus.Entry) error {
	lv := slog.LevelDebug
	switch {
	case e.Level <= logrus.ErrorLevel:
		lv = slog.LevelError
	case e.Level == logrus.WarnLevel:
		lv = slog.LevelWarn
	case e.Level == logrus.InfoLevel:
		lv = slog.LevelInfo
	}
	attrs := make([]any, 0, 2*len(e.Data))
	for k, v := range e.Data {
		attrs = append(attrs, k, v)
	}
	h.log.Log(context.Background(), lv, e.Message, attrs...)
	return nil
}

// Name implements Target.
func (g *Gotgt) Name() string { return "gotgt" }

// Portal implements Target.
func (g *Gotgt) Portal() string { return g.portal }

// IQN implements Target.
func (g *Gotgt) IQN() string { return g.iqn }

// LUN implements Target.
func (g *Gotgt) LUN() int { return gotgtLUN }

// URL implements Target.
func (g *Gotgt) URL() string { return LUNURL(g.portal, g.iqn, gotgtLUN) }

// PID implements Target: 0, gotgt runs in this process.
func (g *Gotgt) PID() int { return 0 }

// PeakRSS implements Target: this process's VmHWM, so it includes the
// harness and whatever else the process did before.
func (g *Gotgt) PeakRSS() (int64, error) { return SelfPeakRSS() }

// Stop closes gotgt's listener and unmaps and closes the file. gotgt has
// no way to close sessions that are still logged in: they end when their
// initiators disconnect.
func (g *Gotgt) Stop() error { return g.stopOnce.do(g.stop) }

func (g *Gotgt) stop() error {
	var errs []error
	if g.drv != nil {
		if err := g.drv.Close(); err != nil {
			errs = append(errs, fmt.Errorf("gotgt: close listener: %w", err))
		}
		select {
		case <-g.runDone:
		case <-time.After(5 * time.Second):
			errs = append(errs, errors.New("gotgt: accept loop still running 5s after close"))
		}
	}
	errs = append(errs, g.forgetLU())
	g.log.Info("gotgt stopped", "portal", g.portal)
	return errors.Join(errs...)
}

// forgetLU removes the LU from gotgt's global map and closes its file.
func (g *Gotgt) forgetLU() error {
	lu := scsi.GetLU(g.iqn, gotgtLUN)
	scsi.DelLUNMapping(scsi.LUNMapping{TargetName: g.iqn, LUN: gotgtLUN, DeviceID: g.deviceID})
	scsi.DelBackendStorage(g.deviceID)
	if lu != nil && lu.Storage != nil {
		if err := lu.Storage.Close(lu); err != nil {
			return fmt.Errorf("gotgt: close backing file: %w", err)
		}
	}
	return nil
}
