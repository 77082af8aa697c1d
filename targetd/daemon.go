package targetd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/iscsi/text"
	"github.com/mhcodi/mhcodi/naming"
	"github.com/mhcodi/mhcodi/targetd/iscsi"
	"github.com/mhcodi/mhcodi/targetd/login"
	"github.com/mhcodi/mhcodi/targetd/scsi"
	"github.com/mhcodi/mhcodi/targetd/volume"
)

// Options configure a Daemon.
type Options struct {
	Config *configs.Config
	Node   string
	// StateDir keeps the fencing state (owner and epoch of every export)
	// and the write log; it survives restarts. Default /var/lib/mhcodi.
	StateDir string
	// Listen overrides the node's SAN address (tests).
	Listen string
	// ExtraInitiators may log in besides the cluster's nodes, without
	// CHAP (conformance tools, maintenance); every use is logged.
	ExtraInitiators []string
	// NopInterval and NopTimeout: see iscsi.Config (defaults 5 s / 10 s).
	NopInterval, NopTimeout time.Duration
	Logger                  *slog.Logger

	// openVolume opens a leg's volume (default: the backend's Open); the
	// package's tests put failing devices in here.
	openVolume func(ctx context.Context, b volume.Backend, name string) (exportVolume, error)
	// now is the clock of the failure log's rate limit (default time.Now).
	now func() time.Time
}

// Daemon is mhcodi-targetd: the node's legs exported over iSCSI.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	srv     *iscsi.Server
	fence   *fenceStore
	wlog    *writeLog
	metrics *metrics

	mu      sync.RWMutex
	cfg     *configs.Config
	secrets *configs.CHAPSecrets
	backend volume.Backend
	exports map[string]*export // by target IQN
	portal  string             // ip:port for SendTargets
}

// export is one leg served as one iSCSI target with LUN 0.
type export struct {
	leg    configs.LegInfo
	iqn    string
	vol    exportVolume
	lu     *scsi.LU
	target *scsi.Target
	scsi   iscsi.SCSITarget
}

// exportVolume is what an export needs of its volume: a *volume.Volume
// (tests inject failing ones through Options.openVolume).
type exportVolume interface {
	scsi.BlockDev
	Path() string
	Refresh() (int64, error)
	ReadSize() (int64, error)
	SyncErr() error
	OnFailure(func(volume.Failure))
	Close() error
}

// New opens the node's legs and prepares the iSCSI server; Serve starts it.
func New(opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.StateDir == "" {
		opts.StateDir = "/var/lib/mhcodi"
	}
	if opts.NopInterval == 0 {
		opts.NopInterval = 5 * time.Second
	}
	if opts.NopTimeout == 0 {
		opts.NopTimeout = 10 * time.Second
	}
	if opts.openVolume == nil {
		opts.openVolume = func(ctx context.Context, b volume.Backend, name string) (exportVolume, error) {
			return b.Open(ctx, name)
		}
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	n, ok := opts.Config.Node(opts.Node)
	if !ok {
		return nil, fmt.Errorf("node %q is not defined in %s", opts.Node, opts.Config.Path)
	}
	if n.Role != configs.RoleStorage {
		return nil, fmt.Errorf("node %q is a %s; targetd runs on storage nodes", opts.Node, n.Role)
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	d := &Daemon{
		opts:    opts,
		log:     opts.Logger.With("node", opts.Node),
		exports: map[string]*export{},
	}
	d.metrics = newMetrics(d)
	var err error
	if d.fence, err = openFenceStore(filepath.Join(opts.StateDir, "targetd-"+opts.Node+"-fence.json")); err != nil {
		return nil, err
	}
	if d.wlog, err = openWriteLog(filepath.Join(opts.StateDir, "targetd-"+opts.Node+"-writes.jsonl")); err != nil {
		return nil, err
	}
	if err := d.Reload(opts.Config); err != nil {
		d.closeExports()
		d.wlog.Close()
		return nil, err
	}
	d.srv = iscsi.NewServer(iscsi.Config{
		Lookup:      d.lookup,
		Discover:    d.discover,
		Authorize:   d.authorize,
		Limits:      login.DefaultLimits(),
		TPGT:        1,
		NopInterval: opts.NopInterval,
		NopTimeout:  opts.NopTimeout,
		Observe:     d.observe,
		Logger:      d.log,
	})
	return d, nil
}

// ListenAddr is where the daemon serves iSCSI.
func (d *Daemon) ListenAddr() string {
	if d.opts.Listen != "" {
		return d.opts.Listen
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	n, _ := d.cfg.Node(d.opts.Node)
	return n.SANAddress.AddrPort(configs.DefaultSANPort).String()
}

// Listen opens the iSCSI listener on the node's SAN address only.
func (d *Daemon) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", d.ListenAddr())
	if err != nil {
		return nil, fmt.Errorf("listen on the SAN address: %w", err)
	}
	d.mu.Lock()
	d.portal = ln.Addr().String()
	d.mu.Unlock()
	return ln, nil
}

// Serve serves iSCSI on ln until Shutdown.
func (d *Daemon) Serve(ln net.Listener) error {
	err := d.srv.Serve(ln)
	if errors.Is(err, iscsi.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets running commands finish (until ctx ends),
// syncs every volume and closes them.
func (d *Daemon) Shutdown(ctx context.Context) error {
	err := d.srv.Shutdown(ctx, true)
	d.closeExports()
	if werr := d.wlog.Close(); err == nil {
		err = werr
	}
	return err
}

func (d *Daemon) closeExports() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for iqn, e := range d.exports {
		if err := e.vol.Sync(); err != nil {
			d.log.Error("sync on shutdown failed", "volume", e.leg.Volume, "err", err)
		}
		e.vol.Close()
		delete(d.exports, iqn)
	}
}

// Reload applies a (re-read) cluster file: new legs are exported, legs that
// left the config are withdrawn (their sessions dropped), grown volumes
// raise CAPACITY DATA HAS CHANGED. Sessions of unchanged legs are left
// alone. A volume smaller than its disk in the cluster file is refused
// (see checkLegSize), new or already exported. On error nothing changes.
func (d *Daemon) Reload(cfg *configs.Config) error {
	n, ok := cfg.Node(d.opts.Node)
	if !ok || n.Role != configs.RoleStorage {
		return fmt.Errorf("node %q is not a storage node in %s", d.opts.Node, cfg.Path)
	}
	secrets, err := cfg.LoadCHAPSecrets()
	if err != nil {
		return err
	}
	backend, err := volume.New(cfg.StorageFor(d.opts.Node), volume.WithLogger(d.log))
	if err != nil {
		return fmt.Errorf("storage backend: %w", err)
	}
	want := map[string]configs.LegInfo{}
	for _, l := range cfg.LegsOn(d.opts.Node) {
		want[l.TargetIQN] = l
	}

	d.mu.RLock()
	var add []configs.LegInfo
	var remove []string
	var kept []keptLeg
	for iqn, l := range want {
		e, ok := d.exports[iqn]
		switch {
		case !ok:
			add = append(add, l)
		case e.leg.Location != l.Location:
			remove = append(remove, iqn)
			add = append(add, l)
		default:
			kept = append(kept, keptLeg{e, l})
		}
	}
	for iqn := range d.exports {
		if _, ok := want[iqn]; !ok {
			remove = append(remove, iqn)
		}
	}
	d.mu.RUnlock()

	ctx := context.Background()
	// The legs already exported are checked against the new file first:
	// it may give a disk a size its volume does not have yet.
	for _, k := range kept {
		actual, err := k.e.vol.ReadSize()
		if err != nil {
			continue // warned about below, as before, and served as it is
		}
		if err := d.checkLegSize(ctx, backend, cfg.Path, k.leg, actual); err != nil {
			return err
		}
	}
	opened := map[string]*export{}
	for _, l := range add {
		e, err := d.openExport(ctx, backend, cfg.Path, l)
		if err != nil {
			for _, o := range opened {
				o.vol.Close()
			}
			return err
		}
		opened[l.TargetIQN] = e
	}

	d.mu.Lock()
	d.cfg, d.secrets, d.backend = cfg, secrets, backend
	var gone []*export
	for _, iqn := range remove {
		gone = append(gone, d.exports[iqn])
		delete(d.exports, iqn)
	}
	for iqn, e := range opened {
		d.exports[iqn] = e
	}
	for _, k := range kept {
		k.e.leg = k.leg // the same volume; the disk's size may be new
	}
	d.mu.Unlock()

	for _, e := range gone {
		if d.srv != nil {
			d.srv.DropSessions("export withdrawn", func(s iscsi.SessionInfo) bool { return s.Target == e.iqn })
		}
		e.vol.Sync()
		e.vol.Close()
		d.log.Info("export withdrawn", "target", e.iqn)
	}
	for _, e := range opened {
		d.log.Info("exporting", "target", e.iqn, "volume", e.vol.Path(), "size", e.vol.Size())
	}
	for _, k := range kept {
		e := k.e
		before := e.vol.Size()
		after, err := e.vol.Refresh()
		if err != nil {
			d.log.Warn("cannot re-read volume size", "volume", e.vol.Path(), "err", err)
			continue
		}
		if after != before {
			e.lu.NotifyResized()
			d.log.Info("volume size changed", "target", e.iqn, "from", before, "to", after)
		}
	}
	return nil
}

// keptLeg is an export a reload keeps, with its leg in the new file.
type keptLeg struct {
	e   *export
	leg configs.LegInfo
}

// checkLegSize compares a leg's volume, actual bytes, with the size the
// cluster file gives its disk. A smaller volume is refused: the guest was
// promised the whole disk, and its md would find the leg too small to
// hold the array (or, for a new array, make one that no longer fits the
// cluster file). A larger one is exported whole, with a warning: growing a
// disk means extending both volumes, then the cluster file, and a targetd
// restarted in between must keep serving the leg already extended. Sizes
// the backend rounds up to (whole LVM extents) are the right size.
func (d *Daemon) checkLegSize(ctx context.Context, b volume.Backend, cfgPath string, l configs.LegInfo, actual int64) error {
	want := int64(l.Size)
	ok, err := b.SizeOK(ctx, want, actual)
	if err != nil {
		return fmt.Errorf("export %s: checking the size of volume %s: %w", l.TargetIQN, l.Volume, err)
	}
	switch {
	case ok:
		return nil
	case actual < want:
		return fmt.Errorf("export %s: volume %s is %s (%d bytes), but the cluster file %s gives disk %s of guest %s %s (%d bytes): refusing to export a leg smaller than its disk (correct the size in the cluster file, or grow the volume to it)",
			l.TargetIQN, l.Volume, volume.FormatSize(actual), actual, cfgPath, l.Disk, l.Guest, volume.FormatSize(want), want)
	}
	d.log.Warn("volume is larger than its disk in the cluster file; exporting all of it",
		"target", l.TargetIQN, "volume", l.Volume, "size", actual, "size_configured", want,
		"hint", "if the disk was grown on purpose, set its size in the cluster file to "+volume.FormatSize(actual))
	return nil
}

// openExport opens leg l's volume, checks its size and makes its LU.
func (d *Daemon) openExport(ctx context.Context, b volume.Backend, cfgPath string, l configs.LegInfo) (*export, error) {
	vol, err := d.opts.openVolume(ctx, b, l.Volume)
	if err != nil {
		return nil, fmt.Errorf("export %s: %w (create it with: mhcodi volume create --node %s --guest %s)", l.TargetIQN, err, l.Node, l.Guest)
	}
	if err := d.checkLegSize(ctx, b, cfgPath, l, vol.Size()); err != nil {
		vol.Close()
		return nil, err
	}
	health := newVolumeHealth(l.TargetIQN, l.Volume, vol.Path(), d.log, d.opts.now, func(op volume.Op, cause string) {
		d.metrics.ioError(l.TargetIQN, op, cause)
	})
	vol.OnFailure(health.failed)
	lu, err := scsi.NewLU(scsi.LUConfig{
		Dev:       vol,
		Serial:    l.Serial,
		WWN:       naming.WWNBytes(l.Leg),
		ProductID: "MHCODI LEG",
		// 4 KiB physical blocks: what LVM on modern disks and page-cached
		// files prefer, so initiators align their I/O to it.
		PhysicalBlockSize: 4096,
		ThinProvisioned:   true,
	})
	if err != nil {
		vol.Close()
		return nil, fmt.Errorf("export %s: %w", l.TargetIQN, err)
	}
	t := scsi.NewTarget(scsi.TargetOptions{})
	if err := t.AddLU(0, lu); err != nil {
		vol.Close()
		return nil, fmt.Errorf("export %s: %w", l.TargetIQN, err)
	}
	return &export{leg: l, iqn: l.TargetIQN, vol: vol, lu: lu, target: t, scsi: iscsi.Adapt(t)}, nil
}

func (d *Daemon) lookup(name string) (iscsi.SCSITarget, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	e, ok := d.exports[strings.ToLower(name)]
	if !ok {
		return nil, false
	}
	return fencedTarget{SCSITarget: e.scsi, iqn: e.iqn, fence: d.fence, wlog: d.wlog}, true
}

// admitted tells which node an initiator is, or whether it is an extra.
func (d *Daemon) admitted(initiator string) (node string, extra bool, ok bool) {
	if n, ok := d.cfg.NodeOfInitiator(initiator); ok {
		return n, false, true
	}
	if slices.Contains(d.opts.ExtraInitiators, strings.ToLower(initiator)) {
		return "", true, true
	}
	return "", false, false
}

// authorize is the login policy: only the cluster's nodes' initiators (and
// explicit extras), with CHAP when the cluster has secrets, and for a
// fenced export only its owner.
func (d *Daemon) authorize(initiator, target string, discovery bool) (login.Decision, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	node, extra, ok := d.admitted(initiator)
	if !ok {
		d.log.Warn("login refused: initiator is not a node of this cluster", "initiator", initiator, "target", target)
		return login.Decision{}, nil
	}
	var dec login.Decision
	if !discovery {
		e, ok := d.exports[strings.ToLower(target)]
		if !ok {
			return login.Decision{NotFound: true}, nil
		}
		if owner := d.fence.get(e.iqn).Owner; owner != "" && owner != strings.ToLower(initiator) {
			d.log.Warn("login refused: export is fenced to another initiator", "initiator", initiator, "target", target, "owner", owner)
			return login.Decision{}, nil
		}
	}
	dec.Allowed = true
	if extra {
		d.log.Info("login by an extra initiator admitted by --allow-initiator", "initiator", initiator, "target", target)
		return dec, nil
	}
	if d.secrets != nil {
		user, secret, ok := d.secrets.InitiatorCredentials(d.cfg, node)
		if !ok {
			return login.Decision{}, fmt.Errorf("no CHAP secret for node %s", node)
		}
		dec.CHAP = &text.Credentials{User: user, Secret: secret}
		if ts := d.secrets.TargetSecret(d.opts.Node); ts != "" {
			name := target
			if discovery {
				name = d.cfg.InitiatorIQN(d.opts.Node)
			}
			dec.MutualCHAP = &text.Credentials{User: name, Secret: ts}
		}
	}
	return dec, nil
}

// discover lists the exports a SendTargets from initiator may see.
func (d *Daemon) discover(initiator string) []login.TargetInfo {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if _, _, ok := d.admitted(initiator); !ok {
		return nil
	}
	var out []login.TargetInfo
	for iqn := range d.exports {
		if owner := d.fence.get(iqn).Owner; owner != "" && owner != strings.ToLower(initiator) {
			continue
		}
		out = append(out, login.TargetInfo{Name: iqn, Portals: []login.Portal{{Address: d.portal, Tag: 1}}})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// observe counts every command (the write log is written where writes
// are admitted: fencedTarget).
func (d *Daemon) observe(ev iscsi.Event) {
	d.metrics.observe(ev)
}

// Sessions lists the logged-in sessions.
func (d *Daemon) Sessions() []iscsi.SessionInfo { return d.srv.Sessions() }
