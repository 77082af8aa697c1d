package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mhcodi/mhcodi/configs"
)

// Host is one node of the cluster: a network namespace with one interface,
// eth0, on the SAN bridge. Its SAN and management addresses are the same
// IP (targetd on 3260, fenced on 7440), as on a small real cluster with one
// network.
type Host struct {
	Name  string // node name in the cluster file
	Role  string // configs.RoleStorage or configs.RoleWitness
	Netns string // <prefix>-<name>
	Addr  netip.Addr
	// SANAddr and MgmtAddr are where its targetd and fenced listen.
	SANAddr, MgmtAddr netip.AddrPort
	// Veth is the bridge's end of the host's link, in the cluster's
	// bridge namespace (the host's end is eth0 in Netns).
	Veth string

	c *Cluster

	// Guarded by c.mu.
	procs   []*Proc
	daemons []daemonSpec
	cut     bool
	frozen  bool
}

// daemonSpec is a long-lived process the host runs, as Revive starts it
// again.
type daemonSpec struct {
	Name string   `json:"name"`
	Argv []string `json:"argv"`
	// Listen, when set, is a TCP address in the host that accepts once the
	// daemon is ready.
	Listen string `json:"listen,omitempty"`
	// Socket, when set, is a unix socket that answers GET /v1/node once
	// the daemon is ready (fenced's local socket).
	Socket string `json:"socket,omitempty"`
	// Wanted is false once the daemon was stopped on purpose: Revive
	// leaves it down.
	Wanted bool `json:"wanted"`
}

// RunDir is the host's own run directory, <dir>/run/<node> (sockets, pid
// files); the cluster file's hypervisor.run_dir is the shared parent.
func (h *Host) RunDir() string { return h.c.path("run", h.Name) }

// StateDir is targetd's --state-dir for the host, <dir>/state/<node>.
func (h *Host) StateDir() string { return h.c.path("state", h.Name) }

// VolumeDir is where the host's file-backed legs live, <dir>/volumes/<node>.
func (h *Host) VolumeDir() string { return h.c.path("volumes", h.Name) }

// TargetdControl is the control socket of the host's targetd.
func (h *Host) TargetdControl() string { return filepath.Join(h.RunDir(), "targetd.sock") }

// InitiatorIQN is the host's iSCSI initiator name in the cluster.
func (h *Host) InitiatorIQN() string { return h.c.Config.InitiatorIQN(h.Name) }

// LogPath is where a process called name that the host runs logs.
func (h *Host) LogPath(name string) string { return h.c.path("logs", h.Name+"-"+name+".log") }

// Prefix is the command line that runs a command inside the host:
// `ip netns exec <netns>`. ip execs the command, so the PID of the
// resulting process is the command's own.
func (h *Host) Prefix() []string { return []string{h.c.ip, "netns", "exec", h.Netns} }

// Exec returns a command that runs argv inside the host. The caller runs
// and waits for it; it is for short commands (iscsi-ls, ip addr): start
// daemons with Start, so teardown knows them.
func (h *Host) Exec(ctx context.Context, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, h.c.ip, append([]string{"netns", "exec", h.Netns}, argv...)...)
}

// DialTCP connects to addr (ip:port) from inside the host, in this
// process: no helper program, and the error is the kernel's own
// (connection refused, network unreachable, timeout).
func (h *Host) DialTCP(ctx context.Context, addr string) (net.Conn, error) {
	return dialIn(ctx, h.Netns, addr)
}

// Listen opens a TCP listener on addr (ip:port) inside the host, in this
// process: a stand-in server for tests of the network itself.
func (h *Host) Listen(ctx context.Context, addr string) (net.Listener, error) {
	return listenIn(ctx, h.Netns, addr)
}

// CanDial reports with nil whether a TCP connection to addr from inside
// the host is accepted within timeout. A frozen daemon's kernel still
// completes the handshake (the listen backlog), so this tests the network
// and the socket, not the daemon; use a real client (iscsi-ls) for that.
func (h *Host) CanDial(addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := h.DialTCP(ctx, addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// Start runs argv as a long-lived process in the host, with stdout and
// stderr appended to LogPath(name), in its own process group, and (unless
// the cluster is detached) killed by the kernel if this process dies. It
// is recorded as a daemon: Kill stops it and Revive starts it again, until
// Stop(name).
func (h *Host) Start(name string, argv ...string) (*Proc, error) {
	return h.startDaemon(daemonSpec{Name: name, Argv: argv, Wanted: true})
}

func (h *Host) startDaemon(d daemonSpec) (*Proc, error) {
	if len(d.Argv) == 0 {
		return nil, fmt.Errorf("host %s: start %s: empty command line", h.Name, d.Name)
	}
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	if h.c.closing {
		return nil, fmt.Errorf("host %s: start %s: the cluster is being torn down", h.Name, d.Name)
	}
	for _, p := range h.procs {
		if p.Name == d.Name && !p.Exited() {
			return nil, fmt.Errorf("host %s: %s already runs (pid %d)", h.Name, d.Name, p.PID)
		}
	}
	logPath := h.LogPath(d.Name)
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("host %s: %s log: %w", h.Name, d.Name, err)
	}
	defer log.Close() // the child has its own copy
	fmt.Fprintf(log, "=== %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(d.Argv, " "))
	p := &Proc{Name: d.Name, Log: logPath, host: h, argv: d.Argv}
	if err := spawn(spawnSpec{argv: append(h.Prefix(), d.Argv...), log: log, detach: h.c.opts.Detach}, p); err != nil {
		return nil, fmt.Errorf("host %s: %w", h.Name, err)
	}
	p.start, _, _ = procStart(p.PID) // gone already: Sweep has nothing to verify, nor to kill
	h.procs = append(h.procs, p)
	i := slices.IndexFunc(h.daemons, func(x daemonSpec) bool { return x.Name == d.Name })
	if i < 0 {
		h.daemons = append(h.daemons, d)
	} else {
		h.daemons[i] = d
	}
	if err := h.c.saveStateLocked(true); err != nil {
		return p, err
	}
	h.c.log.Debug("started", "host", h.Name, "name", d.Name, "pid", p.PID, "argv", d.Argv)
	return p, nil
}

// Track adds a process that someone else started in the host (a qemu that
// daemonized, read from its pid file) to those Freeze, Thaw, Kill and
// teardown signal. It is verified by its start time from then on, so a
// recycled PID is never signalled. Revive does not restart it.
func (h *Host) Track(name string, pid int) (*Proc, error) { return h.track(name, pid, false) }

// track is Track; teardown passes closing to track what fenced left
// behind while nothing new may start.
func (h *Host) track(name string, pid int, closing bool) (*Proc, error) {
	start, zombie, err := procStart(pid)
	if err != nil || zombie {
		return nil, fmt.Errorf("host %s: track %s pid %d: not running (%v)", h.Name, name, pid, err)
	}
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	if h.c.closing && !closing {
		return nil, fmt.Errorf("host %s: track %s: the cluster is being torn down", h.Name, name)
	}
	for _, p := range h.procs {
		if p.PID == pid && p.start == start {
			return p, nil // already known: one Proc per process
		}
	}
	p := &Proc{Name: name, PID: pid, host: h, start: start}
	h.procs = append(h.procs, p)
	return p, h.c.saveStateLocked(true)
}

// TrackPidFile tracks the process whose PID is in file (qemu -pidfile).
func (h *Host) TrackPidFile(name, file string) (*Proc, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("host %s: track %s: %w", h.Name, name, err)
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil {
		return nil, fmt.Errorf("host %s: track %s: pid file %s: %w", h.Name, name, file, err)
	}
	return h.Track(name, pid)
}

// Procs lists the processes the host runs or tracks that are still alive.
func (h *Host) Procs() []*Proc {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	var out []*Proc
	for _, p := range h.procs {
		if !p.Exited() {
			out = append(out, p)
		}
	}
	return out
}

// Proc returns the live process called name, or nil.
func (h *Host) Proc(name string) *Proc {
	for _, p := range h.Procs() {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Stop stops the process called name (SIGTERM, SIGKILL after grace) and
// keeps it down: Revive will not start it again.
func (h *Host) Stop(name string, grace time.Duration) error {
	h.c.mu.Lock()
	for i := range h.daemons {
		if h.daemons[i].Name == name {
			h.daemons[i].Wanted = false
		}
	}
	var victims []*Proc
	for _, p := range h.procs {
		if p.Name == name {
			victims = append(victims, p)
		}
	}
	h.c.mu.Unlock()
	var errs []error
	for _, p := range victims {
		errs = append(errs, p.Stop(grace))
	}
	return errors.Join(errs...)
}

// StartTargetd creates the host's legs (`mhcodi volume create`, inside the
// host), starts mhcodi-targetd with the host's state dir and control
// socket, and returns once it accepts TCP on the SAN address (checked from
// inside the host). extra are more targetd flags.
func (h *Host) StartTargetd(ctx context.Context, extra ...string) (*Proc, error) {
	if h.Role != configs.RoleStorage {
		return nil, fmt.Errorf("host %s is a %s: it runs no targetd", h.Name, h.Role)
	}
	var out bytes.Buffer
	cmd := h.Exec(ctx, h.c.Bin("mhcodi"), "volume", "create", "--config", h.c.ConfigPath, "--node", h.Name)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("host %s: mhcodi volume create: %w: %s", h.Name, err, strings.TrimSpace(out.String()))
	}
	argv := append([]string{h.c.Bin("mhcodi-targetd"), "--config", h.c.ConfigPath, "--node", h.Name,
		"--state-dir", h.StateDir(), "--control-socket", h.TargetdControl()}, extra...)
	return h.startReady(ctx, daemonSpec{Name: "targetd", Argv: argv, Listen: h.SANAddr.String(), Wanted: true})
}

// startReady starts a daemon and waits until it accepts on d.Listen.
func (h *Host) startReady(ctx context.Context, d daemonSpec) (*Proc, error) {
	p, err := h.startDaemon(d)
	if err != nil {
		return nil, err
	}
	if d.Socket != "" {
		if err := h.waitSocket(ctx, p, d); err != nil {
			return nil, err
		}
	}
	if d.Listen == "" {
		return p, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		err := h.CanDial(d.Listen, 300*time.Millisecond)
		if err == nil {
			return p, nil
		}
		select {
		case <-p.Done():
			return nil, fmt.Errorf("host %s: %s exited before listening on %s (%v); its log:\n%s", h.Name, d.Name, d.Listen, p.WaitErr(), p.LogTail(4000))
		case <-ctx.Done():
			_ = p.Stop(0)
			return nil, fmt.Errorf("host %s: %s did not listen on %s: %w (last dial: %v); its log:\n%s", h.Name, d.Name, d.Listen, ctx.Err(), err, p.LogTail(4000))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// StopTargetd stops targetd cleanly (SIGTERM, SIGKILL after 10 s) and
// keeps it down.
func (h *Host) StopTargetd() error { return h.Stop("targetd", 10*time.Second) }

// KillTargetd kills targetd with SIGKILL, a crash: Revive (or
// StartTargetd) starts it again.
func (h *Host) KillTargetd() error {
	if p := h.Proc("targetd"); p != nil {
		return p.Stop(0)
	}
	return nil
}

// Cut pulls the host's cable: the bridge's end of its veth goes down. The
// bridge side is the one cut because that is what a dead switch port or a
// pulled cable does: the others' packets to the host vanish (their dials
// time out, as across a real partition, rather than fail at once), and
// the host itself loses carrier on eth0 and reaches no one. Its address and
// routes stay, so Heal needs nothing but the link.
func (h *Host) Cut() error { return h.setLink(false) }

// Heal plugs the cable back in.
func (h *Host) Heal() error { return h.setLink(true) }

func (h *Host) setLink(up bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	state := "down"
	if up {
		state = "up"
	}
	if err := runIP(ctx, h.c.ip, "-n", h.c.bridgeNetns, "link", "set", h.Veth, state); err != nil {
		return fmt.Errorf("host %s: link %s: %w", h.Name, state, err)
	}
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	h.cut = !up
	return h.c.saveStateLocked(true)
}

// Freeze stops every process of the host with SIGSTOP: a host that hangs
// (its kernel still answers TCP handshakes from the listen backlog, but no
// daemon replies).
func (h *Host) Freeze() error { return h.signalAll(syscall.SIGSTOP, true) }

// Thaw continues every process of the host (SIGCONT).
func (h *Host) Thaw() error { return h.signalAll(syscall.SIGCONT, false) }

func (h *Host) signalAll(sig syscall.Signal, frozen bool) error {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	var errs []error
	for _, p := range h.procs {
		errs = append(errs, p.Signal(sig))
	}
	h.frozen = frozen
	return errors.Join(errs...)
}

// Kill kills every process of the host with SIGKILL and waits until they
// are gone: a host that lost power. Revive starts its daemons again.
func (h *Host) Kill() error {
	err := h.stopAll(0)
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	h.frozen = false
	return errors.Join(err, h.c.saveStateLocked(true))
}

// Revive starts again every daemon the host ran and that was not stopped
// on purpose (Stop, StopTargetd) and is not running, waiting for those
// that listen; a host that rebooted. Tracked processes are not restarted.
func (h *Host) Revive(ctx context.Context) error {
	h.c.mu.Lock()
	var todo []daemonSpec
	for _, d := range h.daemons {
		if !d.Wanted {
			continue
		}
		running := slices.ContainsFunc(h.procs, func(p *Proc) bool { return p.Name == d.Name && !p.Exited() })
		if !running {
			todo = append(todo, d)
		}
	}
	h.c.mu.Unlock()
	var errs []error
	for _, d := range todo {
		if _, err := h.startReady(ctx, d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stopAll stops every process of the host, all at once, and forgets them.
func (h *Host) stopAll(grace time.Duration) error {
	h.c.mu.Lock()
	procs := h.procs
	h.procs = nil
	h.c.mu.Unlock()
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Stop(grace); err != nil {
				errs[i] = fmt.Errorf("host %s: %w", h.Name, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// recordLocked is the host's part of the state file; c.mu is held.
func (h *Host) recordLocked() hostRecord {
	r := hostRecord{Name: h.Name, Role: h.Role, Netns: h.Netns, Addr: h.Addr.String(), Veth: h.Veth,
		Daemons: h.daemons, Cut: h.cut, Frozen: h.frozen, RunDir: h.RunDir(), StateDir: h.StateDir()}
	for _, p := range h.procs {
		if !p.Exited() {
			r.Procs = append(r.Procs, p.record())
		}
	}
	return r
}
