package initiator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/naming"
)

// Backend is a kernel initiator: it logs in and out, and lists the
// kernel's sessions with their LUN 0 block device (which is how a
// device is found for a target: through the kernel, never by guessing
// /dev/sdX).
type Backend interface {
	// Name is the config's initiator.backend value.
	Name() string
	// Recovers reports whether the backend brings a lost session back by
	// itself (iscsid) or needs a new login (iscsinl).
	Recovers() bool
	// Login logs in to t and returns once the session is up (its block
	// device may appear a moment later). A refusal by the target is a
	// *RefusedError.
	Login(ctx context.Context, t Target) error
	// Logout ends a session.
	Logout(ctx context.Context, s Session) error
	// Sessions lists the kernel's sessions.
	Sessions(ctx context.Context) ([]Session, error)
}

// Options configure an Importer.
type Options struct {
	Config *configs.Config
	Node   string
	// Backend imports remote legs; nil with initiator.backend qemu, where
	// only local legs are linked.
	Backend Backend
	// StateFile is where the state is published; "" publishes nothing.
	StateFile string
	// Interval is the time between passes; default 1 s.
	Interval time.Duration
	Logger   *slog.Logger
	// Now and Exists default to the clock and os.Stat; tests replace them.
	Now    func() time.Time
	Exists func(path string) bool
}

// Importer runs the reconciler against the node: it observes, steps,
// acts and publishes, once per interval and whenever a login ends.
type Importer struct {
	opts    Options
	log     *slog.Logger
	rec     *Reconciler
	links   Links
	started time.Time

	mu     sync.Mutex
	cfg    *configs.Config
	wants  []Want
	last   time.Time   // end of the last pass
	status []LegStatus // of the last pass
	reload chan struct{}
}

// New prepares an importer; Run starts it.
func New(o Options) (*Importer, error) {
	if o.Config == nil || o.Node == "" {
		return nil, errors.New("initiator: a config and a node are required")
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Exists == nil {
		o.Exists = func(p string) bool { _, err := os.Stat(p); return err == nil }
	}
	im := &Importer{opts: o, log: o.Logger, reload: make(chan struct{}, 1)}
	if err := im.setConfig(o.Config); err != nil {
		return nil, err
	}
	recovers := o.Backend != nil && o.Backend.Recovers()
	im.rec = NewReconciler(DefaultPolicy(recovers))
	return im, nil
}

func (im *Importer) setConfig(cfg *configs.Config) error {
	if want := cfg.Initiator.Backend; im.opts.Backend == nil && want != configs.InitiatorQEMU ||
		im.opts.Backend != nil && im.opts.Backend.Name() != want {
		return fmt.Errorf("initiator.backend is %q; a change of backend needs a restart", want)
	}
	secrets, err := cfg.LoadCHAPSecrets()
	if err != nil {
		return err
	}
	wants, err := Plan(cfg, im.opts.Node, secrets)
	if err != nil {
		return err
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.cfg != nil && im.cfg.Initiator.LinkDir != cfg.Initiator.LinkDir {
		return fmt.Errorf("initiator.link_dir changed from %s to %s; that needs a restart", im.cfg.Initiator.LinkDir, cfg.Initiator.LinkDir)
	}
	im.cfg, im.wants = cfg, wants
	im.links = Links{Dir: cfg.Initiator.LinkDir}
	return nil
}

// Reload switches to cfg at the next pass; legs that left it are logged
// out and unlinked then.
func (im *Importer) Reload(cfg *configs.Config) error {
	if err := im.setConfig(cfg); err != nil {
		return err
	}
	select {
	case im.reload <- struct{}{}:
	default:
	}
	return nil
}

// Healthy reports whether a pass ended within the last three intervals.
func (im *Importer) Healthy() bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	return !im.last.IsZero() && im.opts.Now().Sub(im.last) < 3*im.opts.Interval+5*time.Second
}

// Status returns the legs' status after the last pass.
func (im *Importer) Status() []LegStatus {
	im.mu.Lock()
	defer im.mu.Unlock()
	return append([]LegStatus(nil), im.status...)
}

// loginDone is a login that ended.
type loginDone struct {
	a   Action
	err error
}

// Run passes until ctx ends. Logins run in their own goroutines (one may
// take the target's login timeout); everything else is quick and runs
// in the pass. It returns after the logins in flight have ended.
func (im *Importer) Run(ctx context.Context) error {
	im.started = im.opts.Now()
	if im.opts.Backend == nil {
		im.log.Info("initiator.backend is qemu: only local legs are linked; the hypervisor's own initiator reaches the remote legs")
	} else {
		im.log.Info("importing remote legs", "backend", im.opts.Backend.Name())
	}
	done := make(chan loginDone, 16)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(im.opts.Interval)
	defer tick.Stop()
	for {
		for _, a := range im.pass(ctx) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				done <- loginDone{a: a, err: im.login(ctx, a)}
			}()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-im.reload:
		case d := <-done:
			im.finish(d)
		}
		// Take every other finished login too, so a pass sees them all.
		for drained := false; !drained; {
			select {
			case d := <-done:
				im.finish(d)
			default:
				drained = true
			}
		}
	}
}

func (im *Importer) finish(d loginDone) {
	now := im.opts.Now()
	im.rec.Done(d.a, d.err, now)
	if d.err != nil {
		im.log.Debug("login failed", "leg", d.a.Leg, "target", d.a.Target.IQN, "err", d.err, "retry_at", im.rec.NextLogin(d.a.Leg).Format(time.RFC3339))
	} else {
		im.log.Info("logged in", "leg", d.a.Leg, "target", d.a.Target.IQN, "portal", d.a.Target.Portal.String())
	}
}

func (im *Importer) login(ctx context.Context, a Action) error {
	if a.Replace != nil {
		im.log.Info("replacing a failed session (the backend does not recover sessions)", "leg", a.Leg, "session", a.Replace.ID)
		if err := im.opts.Backend.Logout(ctx, *a.Replace); err != nil {
			im.log.Warn("tearing down the failed session", "leg", a.Leg, "session", a.Replace.ID, "err", err)
		}
	}
	return im.opts.Backend.Login(ctx, *a.Target)
}

// pass observes, steps, does the quick actions, publishes, and returns
// the logins to start.
func (im *Importer) pass(ctx context.Context) []Action {
	im.mu.Lock()
	wants, cfg, links := im.wants, im.cfg, im.links
	im.mu.Unlock()
	obs := Observed{Now: im.opts.Now(), Present: map[string]bool{}}
	var err error
	if obs.Links, err = links.Scan(); err != nil {
		im.log.Error("reading links", "err", err)
		obs.Links = map[string]string{}
	}
	for _, w := range wants {
		if w.Local {
			obs.Present[w.Location] = im.opts.Exists(w.Location)
		}
	}
	if im.opts.Backend != nil {
		ss, err := im.opts.Backend.Sessions(ctx)
		if err != nil {
			// Without the sessions every leg would look lost: skip the
			// pass rather than log in twice.
			im.log.Error("listing sessions; pass skipped", "err", err)
			return nil
		}
		// Sessions of targets that are not this cluster's are not ours
		// to log out.
		for _, s := range ss {
			if ours(cfg, s.Target) {
				obs.Sessions = append(obs.Sessions, s)
			}
		}
	}
	res := im.rec.Step(wants, obs)
	for _, e := range res.Events {
		im.report(e)
	}
	var logins []Action
	for _, a := range res.Actions {
		var err error
		switch a.Kind {
		case ActLogin:
			logins = append(logins, a)
			continue
		case ActLogout:
			im.log.Info("logging out of a session no leg wants", "session", a.Session.ID, "target", a.Session.Target)
			lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err = im.opts.Backend.Logout(lctx, *a.Session)
			cancel()
		case ActLink:
			im.log.Info("link", "leg", a.Leg, "path", a.Path, "dest", a.Dest)
			err = links.Set(a.Path, a.Dest)
		case ActUnlink:
			im.log.Info("removing the link of a leg that left the config", "path", a.Path)
			err = links.Remove(a.Path)
		}
		if err != nil {
			im.log.Error(string(a.Kind)+" failed", "action", a.String(), "err", err)
		}
		im.rec.Done(a, err, obs.Now)
	}
	im.mu.Lock()
	im.status, im.last = res.Status, im.opts.Now()
	im.mu.Unlock()
	if im.opts.StateFile != "" {
		st := &StateFile{
			Node: im.opts.Node, Backend: cfg.Initiator.Backend, LinkDir: cfg.Initiator.LinkDir,
			PID: os.Getpid(), Started: im.started, Updated: obs.Now,
			IntervalMS: im.opts.Interval.Milliseconds(), Legs: res.Status,
		}
		if err := WriteState(im.opts.StateFile, st); err != nil {
			im.log.Error("publishing state", "err", err)
		}
	}
	return logins
}

// report logs a leg's state change once: refusals and losses as
// warnings, the rest as information.
func (im *Importer) report(e Event) {
	attrs := []any{"leg", e.Leg, "state", string(e.To)}
	if e.From != "" {
		attrs = append(attrs, "was", string(e.From))
	}
	if e.Reason != "" {
		attrs = append(attrs, "reason", e.Reason)
	}
	switch e.To {
	case StateRefused, StateDown:
		im.log.Warn("leg "+string(e.To), attrs...)
	default:
		im.log.Info("leg "+string(e.To), attrs...)
	}
}

// ours reports whether iqn is a target of cfg's cluster.
func ours(cfg *configs.Config, iqn string) bool {
	p, err := naming.ParseIQN(iqn)
	return err == nil && !p.Initiator && p.Prefix == strings.ToLower(cfg.Cluster.IQNPrefix) && p.Leg.Cluster == cfg.Cluster.Name
}
