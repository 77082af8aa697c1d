// Package hypervisor starts, stops and lists guests on one host, behind one
// Driver interface with two implementations: qemu (one qemu process per
// guest with a QMP socket, no libvirt) and xen (xl).
//
// What a guest is made of comes from the cluster file through the pure
// function SpecFor; how each leg is reached is initiator/drive's business.
// A running guest outlives the process that started it (qemu daemonizes,
// xl domains belong to Xen), so every query reads the host's state afresh:
// the qemu driver's run directory and QMP, or `xl list`.
package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/mhcodi/mhcodi/configs"
)

// Driver runs guests on one host.
type Driver interface {
	// Start boots the guest described by spec; it fails with
	// ErrAlreadyRunning if the guest runs on this host already.
	Start(ctx context.Context, spec GuestSpec) error
	// Stop presses the ACPI power button, waits up to timeout for the
	// guest to power off, then destroys it.
	Stop(ctx context.Context, name string, timeout time.Duration) error
	// Destroy ends the guest at once (pulls the plug).
	Destroy(ctx context.Context, name string) error
	// List returns every guest running on this host, by name.
	List(ctx context.Context) ([]Status, error)
	// Status returns one guest's status, or an error wrapping
	// ErrNotRunning.
	Status(ctx context.Context, name string) (Status, error)
}

var (
	// ErrNotRunning is wrapped by Status (and Stop/Destroy) when the guest
	// does not run on this host.
	ErrNotRunning = errors.New("guest is not running on this host")
	// ErrAlreadyRunning is wrapped by Start when the guest runs already.
	ErrAlreadyRunning = errors.New("guest is already running on this host")
)

// State is what the hypervisor says a running guest is doing.
type State string

// States. The qemu driver reports QMP's RunState names as they are (for
// example "inmigrate", "internal-error", "guest-panicked"); these are the
// common ones.
const (
	StateRunning  State = "running"
	StatePaused   State = "paused"
	StateShutdown State = "shutdown" // powered off, the process not yet gone
	StateCrashed  State = "crashed"
	StateBlocked  State = "blocked" // xen: waiting for an event (idle)
	StateDying    State = "dying"
	StateUnknown  State = "unknown" // alive, but the hypervisor did not answer
)

// Status is a running guest.
type Status struct {
	Name  string `json:"name"`
	State State  `json:"state"`
	// PID is the qemu process (qemu driver); DomID the Xen domain.
	PID   int `json:"pid,omitempty"`
	DomID int `json:"domid,omitempty"`
	// Started is when the guest was started (qemu driver: the pid file's
	// time).
	Started time.Time `json:"started,omitzero"`
	// Console is the file the serial console is written to; Channel the
	// host end of the guestraid channel (a unix socket).
	Console string `json:"console,omitempty"`
	Channel string `json:"channel,omitempty"`
	// ConsoleSocket is where the serial console is attached (qemu: a
	// unix socket that takes one client; mhcodi guest console).
	ConsoleSocket string `json:"console_socket,omitempty"`
}

// Options are the host-specific parts of a driver.
type Options struct {
	// Prefix runs before every command the driver starts, e.g.
	// {"ip", "netns", "exec", "node-a"} for a host that is a network
	// namespace in tests.
	Prefix []string
	// QEMU overrides cfg.Hypervisor.QEMU (qemu driver).
	QEMU string
	// ExtraArgs are appended to qemu's command line (tests).
	ExtraArgs []string
	// Network holds qemu's network arguments (e.g. "-nic",
	// "tap,ifname=…"); nil means "-nic none".
	Network []string
	// Bridge is the mhcodi-bridge binary that serves remote legs to qemu
	// (hypervisor.remote_legs: bridge); default: beside this program,
	// else in PATH.
	Bridge string
	// RunDir overrides hypervisor.run_dir: the parent of the guests' run
	// directories (tests run several hosts on one machine).
	RunDir string
	// Netns is the named network namespace the host's guests' taps and
	// bridges live in, for a host that is one (tests with Prefix); ""
	// is the driver's own.
	Netns string
	// HostNet makes taps and reads bridges; default NetlinkNet{Netns}.
	HostNet HostNet
	// Runner runs xl (xen driver); default: exec with Prefix.
	Runner Runner
	// Logger receives what the driver does; default slog.Default().
	Logger *slog.Logger
}

func (o Options) hostNet() HostNet {
	if o.HostNet != nil {
		return o.HostNet
	}
	return NetlinkNet{Netns: o.Netns}
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// New returns the driver cfg.Hypervisor.Driver names, for node.
func New(cfg *configs.Config, node string, o Options) (Driver, error) {
	if _, ok := cfg.Node(node); !ok {
		return nil, fmt.Errorf("hypervisor: node %q is not in %s", node, cfg.Path)
	}
	switch cfg.Hypervisor.Driver {
	case configs.DriverQEMU, "":
		return NewQEMU(cfg, node, o)
	case configs.DriverXen:
		return NewXen(cfg, node, o)
	}
	return nil, fmt.Errorf("hypervisor: unknown driver %q", cfg.Hypervisor.Driver)
}

// Channeler is a driver that can reach a running guest's guestraid
// channel.
type Channeler interface {
	Channel(ctx context.Context, name string) (net.Conn, error)
}
