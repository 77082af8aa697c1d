package iscsitest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/internal/syncbuf"
)

// CommandSpec describes a target daemon started from a binary and a config
// file it is handed, so a new target (mhcodi-targetd) plugs in without
// changes here: the caller says how to write its config and its command
// line.
type CommandSpec struct {
	// Name is the target's name in reports ("targetd").
	Name string
	// Argv is the command line. These placeholders are replaced in every
	// element: {config} (the config file's path), {dir} (the target's temp
	// dir), {portal}, {host}, {port}, {file}, {iqn}, {lun}.
	Argv []string
	// Env is added to the daemon's environment, with the same placeholders.
	Env []string
	// Host is the loopback address the daemon should listen on; 127.0.0.1
	// if empty. Pick another 127.x.y.z for a daemon that cannot be told a
	// port: Port then says which one it uses.
	Host string
	// Port is the daemon's fixed iSCSI port; 0 picks a free one.
	Port int
	// IQN and LUN are what the daemon exports the file as.
	IQN string
	LUN int
	// Config renders the config file from the run's parameters; nil for a
	// daemon configured by its command line only.
	Config func(CommandParams) ([]byte, error)
	// ConfigName is the config file's name in the temp dir ("config" if
	// empty); the extension matters to loaders like viper.
	ConfigName string
	// StopGrace is how long the daemon gets after SIGTERM before SIGKILL
	// (5s if zero).
	StopGrace time.Duration
	// ReadyTimeout bounds the wait for the portal to accept connections
	// (15s if zero).
	ReadyTimeout time.Duration
	Logger       *slog.Logger
}

// CommandParams are what a config file may need.
type CommandParams struct {
	Dir, File, Portal, Host, IQN string
	Port, LUN                    int
	FileSize                     int64
}

// Command is a target daemon started by StartCommand.
type Command struct {
	spec     CommandSpec
	params   CommandParams
	proc     *Proc
	out      *syncbuf.Buffer
	stopOnce onceErr
}

// StartCommand writes the daemon's config into a temp dir, starts it, and
// waits until its portal accepts TCP connections. The daemon is stopped by
// PID (SIGTERM, then SIGKILL after StopGrace) and the temp dir removed by
// Stop; on any error nothing is left running.
func StartCommand(ctx context.Context, file string, spec CommandSpec) (*Command, error) {
	if spec.Name == "" || len(spec.Argv) == 0 {
		return nil, errors.New("start command: Name and Argv are required")
	}
	if spec.IQN == "" {
		return nil, fmt.Errorf("start %s: IQN is required", spec.Name)
	}
	if spec.Host == "" {
		spec.Host = "127.0.0.1"
	}
	if spec.Logger == nil {
		spec.Logger = slog.Default()
	}
	if spec.StopGrace == 0 {
		spec.StopGrace = 5 * time.Second
	}
	if spec.ReadyTimeout == 0 {
		spec.ReadyTimeout = 15 * time.Second
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, fmt.Errorf("start %s: backing file: %w", spec.Name, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("start %s: backing file: %w", spec.Name, err)
	}
	portal := net.JoinHostPort(spec.Host, strconv.Itoa(spec.Port))
	if spec.Port == 0 {
		if portal, err = FreePortal(spec.Host); err != nil {
			return nil, fmt.Errorf("start %s: %w", spec.Name, err)
		}
	}
	if err := checkLoopback(portal); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	_, portStr, _ := net.SplitHostPort(portal)
	port, _ := strconv.Atoi(portStr)

	dir, err := os.MkdirTemp("", "iscsitest-"+spec.Name+"-")
	if err != nil {
		return nil, fmt.Errorf("start %s: temp dir: %w", spec.Name, err)
	}
	c := &Command{spec: spec, out: &syncbuf.Buffer{}, params: CommandParams{
		Dir: dir, File: abs, Portal: portal, Host: spec.Host, IQN: spec.IQN,
		Port: port, LUN: spec.LUN, FileSize: st.Size(),
	}}
	if err := c.start(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("start %s: %w", spec.Name, err), c.Stop())
	}
	spec.Logger.Info("target started", "name", spec.Name, "pid", c.PID(), "portal", portal, "iqn", spec.IQN)
	return c, nil
}

func (c *Command) start(ctx context.Context) error {
	cfgPath := ""
	if c.spec.Config != nil {
		name := c.spec.ConfigName
		if name == "" {
			name = "config"
		}
		cfgPath = filepath.Join(c.params.Dir, name)
		b, err := c.spec.Config(c.params)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	r := strings.NewReplacer(
		"{config}", cfgPath, "{dir}", c.params.Dir, "{portal}", c.params.Portal,
		"{host}", c.params.Host, "{port}", strconv.Itoa(c.params.Port), "{file}", c.params.File,
		"{iqn}", c.params.IQN, "{lun}", strconv.Itoa(c.params.LUN))
	argv := make([]string, len(c.spec.Argv))
	for i, a := range c.spec.Argv {
		argv[i] = r.Replace(a)
	}
	env := make([]string, len(c.spec.Env))
	for i, e := range c.spec.Env {
		env[i] = r.Replace(e)
	}
	p, err := startProc(procSpec{name: c.spec.Name, argv: argv, env: env, dir: c.params.Dir, out: c.out})
	if err != nil {
		return err
	}
	c.proc = p
	if err := waitListening(ctx, c.params.Portal, p.Done(), c.spec.ReadyTimeout); err != nil {
		return fmt.Errorf("pid %d: %w; its output: %s", p.PID(), err, tail(c.out.String(), 1500))
	}
	return nil
}

// Name implements Target.
func (c *Command) Name() string { return c.spec.Name }

// Portal implements Target.
func (c *Command) Portal() string { return c.params.Portal }

// IQN implements Target.
func (c *Command) IQN() string { return c.params.IQN }

// LUN implements Target.
func (c *Command) LUN() int { return c.params.LUN }

// URL implements Target.
func (c *Command) URL() string { return LUNURL(c.params.Portal, c.params.IQN, c.params.LUN) }

// PID implements Target.
func (c *Command) PID() int {
	if c.proc == nil {
		return 0
	}
	return c.proc.PID()
}

// PeakRSS implements Target: the daemon's VmHWM.
func (c *Command) PeakRSS() (int64, error) {
	if c.proc == nil {
		return 0, errors.New("not started")
	}
	return c.proc.PeakRSS()
}

// Log is what the daemon wrote to stdout and stderr so far.
func (c *Command) Log() string { return c.out.String() }

// Stop implements Target: SIGTERM, SIGKILL after StopGrace, by PID; then
// the temp dir (config included) goes.
func (c *Command) Stop() error {
	return c.stopOnce.do(func() error {
		var err error
		if c.proc != nil {
			err = c.proc.Stop(c.spec.StopGrace)
		}
		return errors.Join(err, removeDir(c.params.Dir))
	})
}
