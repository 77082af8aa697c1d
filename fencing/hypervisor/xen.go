package hypervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/naming"
)

// Runner runs a host command and returns its standard output; the error
// of a failed command includes its standard error.
type Runner interface {
	Run(ctx context.Context, argv ...string) ([]byte, error)
}

// ExecRunner runs commands with os/exec, after Prefix (e.g. ip netns exec).
type ExecRunner struct{ Prefix []string }

// Run implements Runner.
func (r ExecRunner) Run(ctx context.Context, argv ...string) ([]byte, error) {
	full := append(slices.Clone(r.Prefix), argv...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(full, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// XenConsoleLog is where xenconsoled (started with --log=guest) writes a
// guest's console.
const XenConsoleLog = "/var/log/xen/console/guest-%s.log"

// Xen runs guests as xl domains. Xen has no iSCSI initiator of its own,
// so every leg is the host kernel's import under /dev/mhcodi (initiator
// backend open-iscsi or netlink), the same path on every host.
type Xen struct {
	cfg    *configs.Config
	node   string
	runDir string
	run    Runner
	net    HostNet
	log    *slog.Logger
}

var _ Driver = (*Xen)(nil)
var _ Channeler = (*Xen)(nil)

// NewXen returns the xl driver for node.
func NewXen(cfg *configs.Config, node string, o Options) (*Xen, error) {
	r := o.Runner
	if r == nil {
		r = ExecRunner{Prefix: o.Prefix}
	}
	if cfg.Hypervisor.RunDir == "" {
		return nil, errors.New("hypervisor: xen: no hypervisor.run_dir")
	}
	return &Xen{cfg: cfg, node: node, runDir: cfg.Hypervisor.RunDir, run: r, net: o.hostNet(),
		log: o.logger().With("driver", "xen", "node", node)}, nil
}

func (x *Xen) dir(name string) string { return filepath.Join(x.runDir, name) }

// xlString quotes s as an xl config string (xl.cfg(5): C-like escapes).
func xlString(s string) string { return strconv.Quote(s) }

// XLConfig renders spec as an xl domain configuration (xl.cfg(5)), pure.
// The guest is PVH (direct kernel boot, no emulated firmware). Disks are
// raw block devices in Drives("xvd") order; "target=" comes last in each
// disk spec because xl takes the rest of the string as the path. The
// guest's kernel learns which xvd device is which leg from
// mhcodi.serials= on its command line (Xen's block devices have no
// serial).
func XLConfig(spec GuestSpec) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by mhcodi for guest %s on %s; rewritten at every start.\n", spec.Name, spec.Node)
	fmt.Fprintf(&b, "name = %s\n", xlString(spec.Name))
	b.WriteString("type = \"pvh\"\n")
	fmt.Fprintf(&b, "memory = %d\n", spec.MemoryMiB)
	fmt.Fprintf(&b, "maxmem = %d\n", spec.MemoryMiB)
	fmt.Fprintf(&b, "vcpus = %d\n", spec.VCPUs)
	fmt.Fprintf(&b, "kernel = %s\n", xlString(spec.Kernel))
	fmt.Fprintf(&b, "ramdisk = %s\n", xlString(spec.Initramfs))
	drives := spec.Drives("xvd")
	var serials []string
	for _, d := range drives {
		serials = append(serials, d.Dev+"="+d.Serial)
	}
	extra := spec.Cmdline
	if len(serials) > 0 {
		extra += " mhcodi.serials=" + strings.Join(serials, ",")
	}
	fmt.Fprintf(&b, "extra = %s\n", xlString(extra))
	b.WriteString("disk = [\n")
	for _, d := range drives {
		fmt.Fprintf(&b, "    'format=raw, vdev=%s, access=rw, target=%s',\n", d.Dev, d.Filename)
	}
	b.WriteString("]\n")
	if len(spec.NICs) > 0 {
		// vifname names the backend device so that the driver finds it to
		// put its port in the network's VLAN; xl has no key for that.
		b.WriteString("vif = [\n")
		for _, n := range spec.NICs {
			fmt.Fprintf(&b, "    'mac=%s, bridge=%s, vifname=%s, type=vif',\n", n.MAC, n.Bridge, n.Tap)
		}
		b.WriteString("]\n")
	}
	fmt.Fprintf(&b, "channel = [\n    'connection=socket, path=%s, name=%s',\n]\n", filepath.Join(spec.RunDir, ChannelSocket), ChannelName)
	// A power-off ends the domain (Stop waits for that); a reboot stays
	// a reboot; a crashed guest is left for the fencing monitor to see
	// and restart, not restarted in a loop here.
	b.WriteString("on_poweroff = \"destroy\"\n")
	b.WriteString("on_reboot = \"restart\"\n")
	b.WriteString("on_crash = \"destroy\"\n")
	return b.String()
}

// Start writes the guest's xl config and creates the domain.
func (x *Xen) Start(ctx context.Context, spec GuestSpec) error {
	if err := naming.ValidLabel(spec.Name); err != nil {
		return fmt.Errorf("xen: start guest: name %w", err)
	}
	dir := x.dir(spec.Name)
	if spec.RunDir == "" {
		spec.RunDir = dir
	}
	for _, d := range spec.Drives("xvd") {
		if d.Driver != "host_device" || strings.ContainsAny(d.Filename, "'\n") {
			return fmt.Errorf("xen: start %s: leg %s is not a plain block device path (%s %q); xen needs initiator.backend open-iscsi or netlink",
				spec.Name, d.Leg.Leg, d.Driver, d.Filename)
		}
	}
	if st, err := x.Status(ctx, spec.Name); err == nil {
		return fmt.Errorf("xen: start %s: %w (domain %d)", spec.Name, ErrAlreadyRunning, st.DomID)
	} else if !errors.Is(err, ErrNotRunning) {
		return fmt.Errorf("xen: start %s: %w", spec.Name, err)
	}
	if err := CheckBridges(x.net, spec); err != nil {
		return fmt.Errorf("xen: start %s: %w", spec.Name, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("xen: start %s: %w", spec.Name, err)
	}
	_ = os.Remove(filepath.Join(dir, ChannelSocket))
	cfgPath := filepath.Join(dir, XLConfigFile)
	if err := os.WriteFile(cfgPath, []byte(XLConfig(spec)), 0o600); err != nil {
		return fmt.Errorf("xen: start %s: %w", spec.Name, err)
	}
	if _, err := x.run.Run(ctx, "xl", "create", cfgPath); err != nil {
		return fmt.Errorf("xen: start %s: %w", spec.Name, err)
	}
	// xl's hotplug script put each vif on its bridge; its VLAN is ours
	// to set.
	for _, n := range spec.NICs {
		if n.VLAN == 0 {
			continue
		}
		if err := x.net.PortVLAN(n.Tap, n.VLAN); err != nil {
			_, _ = x.run.Run(context.WithoutCancel(ctx), "xl", "destroy", spec.Name)
			x.cleanup(spec.Name)
			return fmt.Errorf("xen: start %s: NIC %s: %w", spec.Name, n.Name, err)
		}
	}
	if spec.HostInfo != nil {
		if err := os.WriteFile(filepath.Join(dir, HostInfoFile), spec.HostInfo, 0o600); err != nil {
			return fmt.Errorf("xen: start %s: %w", spec.Name, err)
		}
		st, err := x.Status(ctx, spec.Name)
		if err != nil {
			return fmt.Errorf("xen: start %s: after xl create: %w", spec.Name, err)
		}
		// Keys dom0 creates under /local/domain/<id> inherit the
		// domain's ownership, so the guest can read them.
		key := fmt.Sprintf("/local/domain/%d/mhcodi/host", st.DomID)
		if _, err := x.run.Run(ctx, "xenstore-write", key, string(spec.HostInfo)); err != nil {
			return fmt.Errorf("xen: start %s: host info: %w", spec.Name, err)
		}
	}
	x.log.Info("guest started", "guest", spec.Name, "config", cfgPath)
	return nil
}

// Stop asks the guest to shut down (xl shutdown -w) and destroys it if it
// has not within timeout.
func (x *Xen) Stop(ctx context.Context, name string, timeout time.Duration) error {
	if _, err := x.Status(ctx, name); err != nil {
		return fmt.Errorf("xen: stop: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	_, err := x.run.Run(sctx, "xl", "shutdown", "-w", name)
	cancel()
	if err == nil {
		x.cleanup(name)
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("xen: stop %s: %w", name, context.Cause(ctx))
	}
	x.log.Warn("guest did not shut down in time; destroying", "guest", name, "timeout", timeout, "err", err)
	return x.Destroy(ctx, name)
}

// Destroy ends the domain at once.
func (x *Xen) Destroy(ctx context.Context, name string) error {
	if _, err := x.Status(ctx, name); err != nil {
		x.cleanup(name)
		return fmt.Errorf("xen: destroy: %w", err)
	}
	if _, err := x.run.Run(ctx, "xl", "destroy", name); err != nil {
		return fmt.Errorf("xen: destroy %s: %w", name, err)
	}
	x.cleanup(name)
	return nil
}

func (x *Xen) cleanup(name string) {
	if err := os.RemoveAll(x.dir(name)); err != nil {
		x.log.Warn("cannot remove the run directory", "dir", x.dir(name), "err", err)
	}
}

// List returns every domain but Domain-0.
func (x *Xen) List(ctx context.Context) ([]Status, error) {
	long, err := x.run.Run(ctx, "xl", "list", "-l")
	if err != nil {
		return nil, fmt.Errorf("xen: list: %w", err)
	}
	short, err := x.run.Run(ctx, "xl", "list")
	if err != nil {
		return nil, fmt.Errorf("xen: list: %w", err)
	}
	doms, err := ParseXLListLong(long)
	if err != nil {
		return nil, fmt.Errorf("xen: list: %w", err)
	}
	states, err := ParseXLList(short)
	if err != nil {
		return nil, fmt.Errorf("xen: list: %w", err)
	}
	var out []Status
	for _, d := range doms {
		if d.DomID == 0 {
			continue
		}
		st := Status{Name: d.Name, DomID: d.DomID, State: StateUnknown,
			Console: fmt.Sprintf(XenConsoleLog, d.Name)}
		if s, ok := states[d.Name]; ok {
			st.State = s
		}
		if len(d.Channels) > 0 {
			st.Channel = d.Channels[0]
		}
		out = append(out, st)
	}
	return out, nil
}

// Status returns one domain's status.
func (x *Xen) Status(ctx context.Context, name string) (Status, error) {
	all, err := x.List(ctx)
	if err != nil {
		return Status{}, err
	}
	for _, s := range all {
		if s.Name == name {
			return s, nil
		}
	}
	return Status{}, fmt.Errorf("xen: %s: %w", name, ErrNotRunning)
}

// Channel connects to the host end of the guest's guestraid channel.
func (x *Xen) Channel(ctx context.Context, name string) (net.Conn, error) {
	st, err := x.Status(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("xen: channel: %w", err)
	}
	p := st.Channel
	if p == "" {
		p = filepath.Join(x.dir(name), ChannelSocket)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", p)
	if err != nil {
		return nil, fmt.Errorf("xen: channel of %s: %w", name, err)
	}
	return c, nil
}

// XLDomain is one domain of `xl list -l`.
type XLDomain struct {
	DomID     int
	Name      string
	Type      string
	MaxVCPUs  int
	MaxMemKiB int64
	Kernel    string
	Cmdline   string
	// Disks are the backing paths by virtual device (xvda…).
	Disks map[string]string
	// Channels are the socket paths of socket channels.
	Channels []string
}

// xlLong is the part of `xl list -l`'s JSON (libxl_domain_config) read.
type xlLong struct {
	DomID  int `json:"domid"`
	Config struct {
		CInfo struct {
			Type string `json:"type"`
			Name string `json:"name"`
		} `json:"c_info"`
		BInfo struct {
			MaxVCPUs  int    `json:"max_vcpus"`
			MaxMemKiB int64  `json:"max_memkb"`
			Kernel    string `json:"kernel"`
			Cmdline   string `json:"cmdline"`
		} `json:"b_info"`
		Disks []struct {
			PdevPath string `json:"pdev_path"`
			Vdev     string `json:"vdev"`
		} `json:"disks"`
		Channels []struct {
			Name       string `json:"name"`
			Connection string `json:"connection"`
			U          struct {
				Socket struct {
					Path string `json:"path"`
				} `json:"socket"`
			} `json:"u"`
		} `json:"channels"`
	} `json:"config"`
}

// ParseXLListLong reads `xl list -l` (JSON; xl's default output format).
func ParseXLListLong(b []byte) ([]XLDomain, error) {
	var raw []xlLong
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("xl list -l: %w", err)
	}
	out := make([]XLDomain, 0, len(raw))
	for _, r := range raw {
		c := r.Config
		d := XLDomain{DomID: r.DomID, Name: c.CInfo.Name, Type: c.CInfo.Type,
			MaxVCPUs: c.BInfo.MaxVCPUs, MaxMemKiB: c.BInfo.MaxMemKiB,
			Kernel: c.BInfo.Kernel, Cmdline: c.BInfo.Cmdline, Disks: map[string]string{}}
		for _, dk := range c.Disks {
			d.Disks[dk.Vdev] = dk.PdevPath
		}
		for _, ch := range c.Channels {
			if strings.EqualFold(ch.Connection, "socket") && ch.U.Socket.Path != "" {
				d.Channels = append(d.Channels, ch.U.Socket.Path)
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// ParseXLList reads the table of plain `xl list` into each domain's
// state. The State column holds six flags, "-" when clear: r(unning)
// b(locked) p(aused) s(hutdown) c(rashed) d(ying).
func ParseXLList(b []byte) (map[string]State, error) {
	out := map[string]State{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	header := true
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if header {
			if f[0] != "Name" {
				return nil, fmt.Errorf("xl list: unexpected header %q", sc.Text())
			}
			header = false
			continue
		}
		if len(f) < 6 {
			return nil, fmt.Errorf("xl list: short line %q", sc.Text())
		}
		// Name ID Mem VCPUs State Time(s): the name has no spaces
		// (xl refuses them), the state is the fifth column.
		out[f[0]] = xlState(f[4])
	}
	if header {
		return nil, errors.New("xl list: no header")
	}
	return out, sc.Err()
}

func xlState(flags string) State {
	// The most telling flag wins: a dying or crashed domain may still
	// show r.
	for _, p := range []struct {
		c byte
		s State
	}{{'d', StateDying}, {'c', StateCrashed}, {'s', StateShutdown}, {'p', StatePaused}, {'r', StateRunning}, {'b', StateBlocked}} {
		if strings.IndexByte(flags, p.c) >= 0 {
			return p.s
		}
	}
	// No flag: runnable, waiting for a CPU.
	return StateRunning
}
