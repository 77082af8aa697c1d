// Command guestraid keeps a guest's disks mirrored across its two legs
// with md RAID1: see package github.com/mhcodi/mhcodi/guestraid and
// guestraid/README.md.
//
//	guestraid assemble [flags]   create or assemble every disk's array, then exit
//	guestraid watch [flags]      watch and repair the arrays (a daemon)
//	guestraid status [--json]    show the arrays
//	guestraid boot [flags]       the init of a u-root guest image
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/mhcodi/mhcodi/guestraid/boot"
	"github.com/mhcodi/mhcodi/guestraid/channel"
	"github.com/mhcodi/mhcodi/guestraid/md"
	"github.com/mhcodi/mhcodi/guestraid/raid"
	"github.com/mhcodi/mhcodi/internal/cliflag"
	"github.com/mhcodi/mhcodi/internal/version"
)

const usage = `usage: guestraid <command> [flags]

commands:
  assemble   create (first boot) or assemble every disk's array, apply flags, re-add/add legs; exit
  watch      watch the arrays, report to the host, repair (daemon)
  status     print the arrays (--json: the state messages)
  boot       init of a u-root image: mounts, modules, assemble, run commands, watch, power off

run "guestraid <command> -h" for its flags, "guestraid --version" for the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "assemble", "watch", "boot":
		return daemonCmd(args[0], args[1:], stdout, stderr)
	case "status":
		return statusCmd(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "-version", "--version":
		version.Print(stdout, "guestraid")
		return 0
	default:
		fmt.Fprintf(stderr, "guestraid: unknown command %q\n%s", args[0], usage)
		return 2
	}
}

// common are the flags every command that finds the disks has.
type common struct {
	hostInfo  string
	stateFile string
	mdadm     string
	logLevel  string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.hostInfo, "host-info", "", "read host info from this JSON file instead of fw_cfg ("+channel.FwCfgPath+")")
	fs.StringVar(&c.stateFile, "state-file", "/run/guestraid/state.json", "host info and wiped legs kept across runs (initramfs → system); \"\" for none")
	fs.StringVar(&c.mdadm, "mdadm", "/sbin/mdadm", "mdadm binary")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
}

func (c *common) logger(stderr io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})), nil
}

func (c *common) system() *md.System {
	s := md.NewSystem()
	s.Mdadm.Path = c.mdadm
	return s
}

// staticHost finds host info without the channel: --host-info, else
// fw_cfg, else the state file. source says where it came from.
func (c *common) staticHost() (h *channel.Host, wiped []string, source string, err error) {
	if c.hostInfo != "" {
		h, err := channel.ReadHostFile(c.hostInfo)
		return h, nil, c.hostInfo, err
	}
	if c.stateFile != "" {
		h, wiped, _ = raid.LoadState(c.stateFile) // absent or unreadable: none
		if h != nil {
			source = c.stateFile
		}
	}
	if fh, err := channel.ReadHostFile(channel.FwCfgPath); err == nil {
		// fw_cfg is what the hypervisor passed at this boot; a host
		// message saved by an earlier run of this boot is newer only if
		// its epoch is.
		if h == nil || fh.Epoch >= h.Epoch {
			h, source = fh, "fw_cfg"
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, "", err
	}
	return h, wiped, source, nil
}

func daemonCmd(name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("guestraid "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	chSpec := fs.String("channel", "auto", "host channel: auto (virtio-serial port "+channel.PortName+"), none, unix:PATH, or a device path")
	hostWait := fs.Duration("host-wait", 10*time.Second, "without host info from a file or fw_cfg, wait this long for a host message on the channel")
	cfg := raid.DefaultConfig()
	poll := time.Second
	if name != "assemble" {
		fs.DurationVar(&poll, "poll", time.Second, "how often md sysfs is read")
		fs.DurationVar(&cfg.CheckEvery, "check-every", 0, "start a check scrub of each whole, idle array this often (0: only when the host asks)")
		fs.DurationVar(&cfg.ReaddDelay, "readd-delay", cfg.ReaddDelay, "a leg removed as faulty stays out at least this long before it is re-added")
		fs.DurationVar(&cfg.Heartbeat, "heartbeat", cfg.Heartbeat, "send an unchanged state message this often")
	}
	var modulesFile string
	var runs stringList
	poweroff := true
	if name == "boot" {
		fs.StringVar(&modulesFile, "modules-file", "/etc/guestraid/modules", "kernel modules to load first, one per line (if the file exists)")
		fs.Var(&runs, "run", "a `command` to run once the arrays are up, as \"argv words\" split at spaces (repeatable)")
		fs.BoolVar(&poweroff, "poweroff", true, "power off at the end (false: exit, for tests)")
	}
	if code, ok := cliflag.Parse(fs, args, stdout); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "guestraid %s: unexpected arguments %q\n", name, fs.Args())
		return 2
	}
	log, err := c.logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "guestraid %s: %v\n", name, err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if name == "boot" {
		if err := boot.Mounts(); err != nil {
			log.Error("mounting pseudo file systems", "err", err)
		}
		if err := boot.LoadModules(modulesFile, log); err != nil {
			log.Error("loading kernel modules", "err", err)
		}
	}
	var button <-chan struct{}
	if name == "boot" {
		// Watched from now on (the modules made the input devices): a
		// press while the arrays assemble is not lost, the watch below
		// sees it at once and shuts down.
		button = boot.PowerButton(ctx, log)
	}

	h, wiped, source, err := c.staticHost()
	if err != nil {
		log.Error("reading host info", "err", err)
	}
	if name == "boot" {
		// The NICs first: a guest answers on its network while its
		// arrays assemble.
		if err := boot.Network(h, 5*time.Second, log); err != nil {
			log.Error("network", "err", err)
		}
		if h != nil && len(h.NICs) > 0 {
			go boot.Echo(ctx, log)
		}
		if con := boot.Console(); con != nil {
			go boot.ConsoleShell(ctx, con, con, h)
		}
	}
	var conn *channel.Conn
	rwc, err := channel.Open(ctx, *chSpec)
	switch {
	case err != nil:
		log.Info("no host channel", "channel", *chSpec, "err", err)
	case rwc != nil:
		conn = channel.NewConn(rwc, !strings.HasPrefix(*chSpec, "unix:"), log)
		defer conn.Close()
	}
	if h == nil && conn != nil && *hostWait > 0 {
		h = waitHost(ctx, conn, *hostWait, log)
		if h != nil {
			source = "channel"
		}
	}

	sys := c.system()
	svc := &raid.Service{Sys: sys, Log: log, StateFile: c.stateFile}
	if conn != nil {
		svc.Sink = conn
	}
	if h != nil {
		log.Info("host info", "source", source, "guest", h.Guest, "node", h.Node, "epoch", h.Epoch, "disks", len(h.Disks))
		svc.W = raid.NewWatcher(cfg, h, nil)
	} else {
		devs, err := svc.Scan(ctx)
		if err != nil {
			log.Error("scanning for md legs", "err", err)
		}
		disks := raid.DisksFromScan(devs)
		svc.W = raid.NewWatcher(cfg, nil, disks)
		svc.Emit(channel.Event{Type: channel.TypeEvent, Time: channel.Timestamp(time.Now()), Event: channel.EventNoHostInfo,
			Detail: fmt.Sprintf("no host info (fw_cfg, --host-info, state file, or a host message within %s): assembling the %d array(s) found by their superblocks with the event-count policy, no write-mostly legs, creating nothing", *hostWait, len(disks))})
	}
	svc.W.SetWiped(wiped)

	// Assembly: a few rounds, until nothing is left to do (assemble, then
	// flags, re-adds, adds; a wipe of a member takes one more).
	for i := 0; i < 4; i++ {
		if svc.Step(ctx) == 0 {
			break
		}
	}
	if name == "assemble" {
		conn.Flush(2 * time.Second)
		for _, d := range svc.W.Disks() {
			if a, err := sys.Array(d.MD); err != nil || !a.Running {
				log.Error("array not running", "disk", d.Name, "md", d.MD)
				return 1
			}
		}
		return 0
	}

	var children *boot.Children
	if name == "boot" {
		children = boot.NewChildren(log)
		for _, r := range runs {
			if err := children.Start(strings.Fields(r)); err != nil {
				log.Error("running a command", "err", err)
			}
		}
	}

	// Watch until SIGTERM/SIGINT or the power button.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-button:
			log.Info("power button pressed")
			cancel()
		case <-wctx.Done():
		}
	}()
	notify := systemdNotifier(log)
	var in <-chan any
	if conn != nil {
		in = conn.Incoming()
	}
	if err := svc.Run(wctx, raid.RunOptions{Poll: poll, Incoming: in, AfterStep: notify}); err != nil {
		log.Error("watch", "err", err)
	}
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	if name != "boot" {
		return 0
	}

	// Shutdown: the guest's commands first (they use the arrays), then
	// the arrays, then the machine.
	children.Stop(10 * time.Second)
	if err := svc.Stop(context.Background()); err != nil {
		log.Error("stopping arrays", "err", err)
	}
	conn.Flush(2 * time.Second)
	if !poweroff {
		fmt.Fprintln(stdout, "guestraid: shut down (--poweroff=false)")
		return 0
	}
	if err := boot.PowerOff(); err != nil {
		log.Error("power off", "err", err)
	}
	return 1
}

// waitHost waits up to d for a host message.
func waitHost(ctx context.Context, conn *channel.Conn, d time.Duration, log *slog.Logger) *channel.Host {
	log.Info("waiting for host info on the channel", "for", d)
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			return nil
		case m, ok := <-conn.Incoming():
			if !ok {
				return nil
			}
			if h, ok := m.(*channel.Host); ok {
				return h
			}
		}
	}
}

// systemdNotifier returns the after-step hook: READY=1 after the first
// step, WATCHDOG=1 every half watchdog interval, both only under systemd
// (NOTIFY_SOCKET set).
func systemdNotifier(log *slog.Logger) func() {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog settings", "err", err)
	}
	ready := false
	var last time.Time
	return func() {
		if !ready {
			ready = true
			_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
		}
		if interval > 0 && time.Since(last) >= interval/2 {
			last = time.Now()
			_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		}
	}
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, "; ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func statusCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("guestraid status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	asJSON := fs.Bool("json", false, "print the state messages (a JSON array)")
	if code, ok := cliflag.Parse(fs, args, stdout); !ok {
		return code
	}
	log, err := c.logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "guestraid status: %v\n", err)
		return 2
	}
	ctx := context.Background()
	h, _, _, err := c.staticHost()
	if err != nil {
		log.Warn("reading host info", "err", err)
	}
	svc := &raid.Service{Sys: c.system(), Log: log}
	if h != nil {
		svc.W = raid.NewWatcher(raid.DefaultConfig(), h, nil)
	} else {
		devs, err := svc.Scan(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "guestraid status: %v\n", err)
			return 1
		}
		svc.W = raid.NewWatcher(raid.DefaultConfig(), nil, raid.DisksFromScan(devs))
	}
	obs := svc.Observe(ctx)
	now := time.Now()
	states := []channel.State{}
	for i, d := range svc.W.Disks() {
		states = append(states, raid.State(now, d, obs[i]))
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(states); err != nil {
			return 1
		}
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DISK\tMD\tSTATE\tDEGRADED\tSYNC\tPROGRESS\tMISMATCH\tSIZE\tLEG\tNODE\tDEV\tLEG STATE\tFLAGS")
	for _, s := range states {
		prog := "-"
		if s.SyncAction != "idle" && s.Progress > 0 {
			prog = fmt.Sprintf("%.1f%%", 100*s.Progress)
		}
		head := fmt.Sprintf("%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s", s.Disk, s.MD, s.ArrayState, s.Degraded, s.SyncAction, prog, s.MismatchCnt, mib(s.ArrayBytes))
		for i, l := range s.Legs {
			if i > 0 {
				head = "\t\t\t\t\t\t\t"
			}
			dev, flags := l.Dev, strings.Join(l.Flags, ",")
			if dev == "" {
				dev = "-"
			}
			if flags == "" {
				flags = "-"
			}
			node := l.Node
			if node == "" {
				node = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", head, l.Serial, node, dev, l.State, flags)
		}
		if len(s.Legs) == 0 {
			fmt.Fprintf(tw, "%s\t\t\t\t\t\n", head)
		}
	}
	_ = tw.Flush()
	return 0
}

func mib(b int64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%dMiB", b>>20)
}
