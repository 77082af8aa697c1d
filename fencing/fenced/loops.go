package fenced

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/events"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/fencing/ledger"
)

// ledgerRetry is the pause between attempts to start the ledger or to
// rejoin.
const ledgerRetry = 3 * time.Second

// RunOptions are Run's listeners and callbacks.
type RunOptions struct {
	// TLS is a TCP listener on the management address (nil: none); Run
	// wraps it in TLS with Options.ServerTLS.
	TLS       net.Listener
	ServerTLS *tls.Config
	// Local is the root-only unix socket (ListenUnix; nil: none).
	Local net.Listener
	// Ready is called once, when the API listens and the ledger is up.
	Ready func()
}

// Run serves the API, starts the ledger and runs the loops until ctx
// ends. Then it stops the API, the loops and the member, and leaves every
// guest running: a fenced restart must not take guests down.
func (s *Server) Run(ctx context.Context, o RunOptions) error {
	s.baseCtx = ctx
	tlsSrv, localSrv := s.HTTPServers()
	serveErr := make(chan error, 4)
	if o.TLS != nil {
		if o.ServerTLS == nil {
			return errors.New("fenced: a TLS listener without a TLS configuration")
		}
		go func() { serveErr <- tlsSrv.Serve(tls.NewListener(o.TLS, o.ServerTLS)) }()
	}
	if o.Local != nil {
		go func() { serveErr <- localSrv.Serve(o.Local) }()
	}

	loopCtx, stopLoops := context.WithCancel(ctx)
	if s.hook != nil {
		s.hook.Start(loopCtx)
		defer s.hook.Wait()
	}
	var wg sync.WaitGroup
	goLoop := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(loopCtx) }()
	}
	if !s.witness {
		if err := s.armLease(); err != nil {
			stopLoops()
			tlsSrv.Close()
			localSrv.Close()
			return err
		}
		if s.keeper != nil {
			goLoop(func(ctx context.Context) { s.keeper.Run(ctx, s.clock) })
		}
		goLoop(s.monitorLoop)
		goLoop(s.watchLoop)
	}
	goLoop(func(ctx context.Context) {
		if !s.startLedger(ctx) {
			return
		}
		close(s.ready)
		s.log.Info("fenced ready", "quorum_mode", s.quorum, "witness", s.witness)
		if o.Ready != nil {
			o.Ready()
		}
		if err := s.superviseLedger(ctx); err != nil {
			s.log.Error("ledger member gone", "err", err)
			serveErr <- err
		}
	})

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		if err != nil {
			err = fmt.Errorf("fenced: serving: %w", err)
		}
	}
	// The API goes first, so that nothing new starts while the rest
	// stops; guests keep running.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = tlsSrv.Shutdown(sctx)
	_ = localSrv.Shutdown(sctx)
	cancel()
	stopLoops()
	wg.Wait()
	if s.failover != nil {
		s.failover.wg.Wait()
	}
	if s.channels != nil {
		s.channels.Close()
	}
	if s.dog != nil {
		if derr := s.dog.Close(); derr != nil {
			s.log.Warn("watchdog not disarmed", "err", derr)
		}
	}
	s.stopLedger()
	s.log.Info("fenced stopped; guests left running")
	return err
}

// armLease makes the lease keeper (quorum mode) and opens the watchdog.
func (s *Server) armLease() error {
	if !s.quorum {
		return nil
	}
	ttl, margin := s.cfg.Timeouts.LeaseTTL, s.cfg.Fencing.LeaseMargin
	if ttl <= 0 {
		ttl = configs.DefaultLeaseTTL
	}
	if margin <= 0 || margin >= ttl {
		margin = min(configs.DefaultLeaseMargin, ttl/2)
	}
	if dev := s.cfg.Fencing.Watchdog; dev != "" {
		// The watchdog fires margin after the last feed at the latest,
		// so even a fenced that hangs right at ttl−margin has the host
		// reset before the lease can expire elsewhere.
		d, err := OpenWatchdog(dev, margin, s.log)
		if err != nil {
			return fmt.Errorf("fenced: %w", err)
		}
		s.dog = d
	}
	s.keeper = NewLeaseKeeper(ttl, margin, s.ledger.LastRenewed, s.selfFence, s.dog,
		filepath.Join(s.stateDir, "lease-renewed"), s.log)
	return nil
}

// startLedger starts the member and the store, retrying until it works
// or ctx ends.
func (s *Server) startLedger(ctx context.Context) bool {
	for {
		m, st, err := s.starter.StartLedger(ctx)
		if err == nil {
			s.memberMu.Lock()
			s.member = m
			s.memberMu.Unlock()
			if old := s.ledger.set(st); old != nil {
				_ = old.Close()
			}
			s.kickMonitor()
			return true
		}
		s.log.Error("cannot start the ledger; retrying", "err", err, "retry", ledgerRetry)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(ledgerRetry):
		}
	}
}

// stopLedger closes the store and stops the member. The Store must not
// revoke the node's lease on Close: guests keep running across a fenced
// restart, and the lease keeps them owned until the next fenced renews.
func (s *Server) stopLedger() {
	if old := s.ledger.set(nil); old != nil {
		if err := old.Close(); err != nil {
			s.log.Warn("closing the ledger", "err", err)
		}
	}
	s.memberMu.Lock()
	m := s.member
	s.member = nil
	s.memberMu.Unlock()
	if m == nil {
		return
	}
	// etcd's Close can wait forever for a member that never had quorum
	// (its client servers only start once it is ready); fenced is on its
	// way out, and exiting ends the member just as well.
	done := make(chan struct{})
	go func() { m.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(memberStopTimeout):
		s.log.Warn("the ledger member did not stop in time; leaving it to the process's exit", "waited", memberStopTimeout)
	}
}

// memberStopTimeout bounds the member's stop at shutdown.
const memberStopTimeout = 10 * time.Second

// forceNewCluster forks the ledger to this node alone: the member is
// restarted with --force-new-cluster; the Store stays (its client
// reconnects).
func (s *Server) forceNewCluster(ctx context.Context) error {
	s.memberMu.Lock()
	m := s.member
	s.memberMu.Unlock()
	if m == nil {
		return errors.New("force new cluster: this node runs no ledger member (an external etcd is forked where it runs)")
	}
	s.log.Warn("FORCED: forking the ledger to this node alone (the operator says every other node is down)")
	if err := m.Fork(ctx); err != nil {
		return fmt.Errorf("force new cluster: %w", err)
	}
	s.kickMonitor()
	return nil
}

// errMemberStopped ends Run when the member stopped by itself for another
// reason than removal: systemd restarts fenced, which starts it again.
var errMemberStopped = errors.New("fenced: the ledger member stopped by itself")

// superviseLedger waits for the member's run to end: removed from the
// cluster (the ledger was forked away while this node was gone), it
// rejoins; stopped for another reason, fenced ends.
func (s *Server) superviseLedger(ctx context.Context) error {
	for {
		s.memberMu.Lock()
		m := s.member
		s.memberMu.Unlock()
		if m == nil {
			<-ctx.Done()
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.Done():
		}
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case m.Removed():
			if !s.rejoin(ctx, m) {
				return nil
			}
		case m.Err() != nil:
			return fmt.Errorf("%w: %v", errMemberStopped, m.Err())
		default:
			// Stopped on purpose: a Fork or a Rejoin restarts it in
			// place; watch the next run.
			if !sleepCtx(ctx, 100*time.Millisecond) {
				return nil
			}
		}
	}
}

// rejoin brings a node whose ledger was forked away back as a new member:
// first it destroys every guest the peers' ledgers do not give it, then
// it joins through a peer, its old data moved aside. Its legs were marked
// stale by the forced failover, so the guests resync them in full. It
// reports whether it rejoined (false: ctx ended).
func (s *Server) rejoin(ctx context.Context, m Member) bool {
	s.log.Error("this node's ledger member was removed (a forced failover forked the ledger): rejoining")
	for {
		peers := s.askPeers(ctx)
		var authoritative []api.LedgerResponse
		for _, p := range peers {
			if p.Quorum {
				authoritative = append(authoritative, p)
			}
		}
		if len(authoritative) == 0 {
			s.log.Warn("rejoin: no peer with a working ledger answers yet", "answered", len(peers))
			if !sleepCtx(ctx, ledgerRetry) {
				return false
			}
			continue
		}
		if !s.witness {
			s.destroyUnowned(ctx, authoritative)
		}
		joined := false
		for _, p := range authoritative {
			jctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			resp, err := s.client(p.Node).Join(jctx, api.JoinRequest{Node: s.self, PeerURL: m.PeerURL()})
			cancel()
			if err != nil {
				s.log.Warn("rejoin: peer refused", "peer", p.Node, "err", err)
				continue
			}
			if err := m.Rejoin(ctx, resp); err != nil {
				s.log.Error("rejoin: cannot start the member again", "peer", p.Node, "err", err)
				continue
			}
			s.log.Info("rejoined the ledger as a new member", "through", p.Node, "initial_cluster", resp.InitialCluster)
			joined = true
			break
		}
		if joined {
			s.kickMonitor()
			return true
		}
		if !sleepCtx(ctx, ledgerRetry) {
			return false
		}
	}
}

// destroyUnowned destroys every local guest that none of the answers
// gives to this node.
func (s *Server) destroyUnowned(ctx context.Context, answers []api.LedgerResponse) {
	running, err := s.listRunning(ctx)
	if err != nil {
		s.log.Error("rejoin: cannot list the guests", "err", err)
		return
	}
	for _, st := range running {
		owner, epoch := "", uint64(0)
		for _, a := range answers {
			for _, r := range a.Records {
				if r.Guest == st.Name && r.Epoch >= epoch {
					owner, epoch = r.Owner, r.Epoch
				}
			}
		}
		if owner == s.self {
			continue
		}
		s.destroy(ctx, Foreign{Guest: st.Name, Owner: owner, Epoch: epoch,
			Reason: fmt.Sprintf("rejoin: the cluster's ledger gives it to %q at epoch %d", owner, epoch)}, true)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// kickMonitor asks for a monitor round now.
func (s *Server) kickMonitor() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Server) monitorInterval() time.Duration {
	if d := s.cfg.Fencing.MonitorInterval; d > 0 {
		return d
	}
	return configs.DefaultMonitorInterval
}

// monitorLoop runs a monitor round every fencing.monitor_interval, and
// whenever the ledger changes or a guest was started.
func (s *Server) monitorLoop(ctx context.Context) {
	t := time.NewTicker(s.monitorInterval())
	defer t.Stop()
	for {
		s.MonitorOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
	}
}

// watchLoop turns ledger changes into monitor rounds, so that an expired
// lease or a new owner is acted on at once.
func (s *Server) watchLoop(ctx context.Context) {
	var lw *leaseWatch
	if s.quorum && s.cfg.Fencing.AutoFailover && s.failover != nil {
		lw = newLeaseWatch(s.timers, s.checkFailoverOf)
		done := make(chan struct{})
		defer func() { <-done }()
		go func() { defer close(done); lw.Run(ctx) }()
	}
	for g := range s.ledger.Watch(ctx) {
		s.kickMonitor()
		if lw != nil {
			lw.notify(g)
		}
	}
}

// managed reports whether guest is in the cluster file.
func (s *Server) managedSet() map[string]bool {
	m := map[string]bool{}
	for _, g := range s.cfg.Guests {
		m[g.Name] = true
	}
	return m
}

func (s *Server) listRunning(ctx context.Context) ([]hypervisor.Status, error) {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return s.driver.List(lctx)
}

// MonitorOnce is one monitor round: list the guests, read the ledger
// (or, in two-node mode without quorum, the peers' ledgers), destroy what
// must not run here, then keep the channels, the leases and automatic
// failover up to date.
func (s *Server) MonitorOnce(ctx context.Context) {
	defer func() { s.lastRound.Store(time.Now().UnixNano()) }()
	_, gens := s.guardSnapshot()
	running, err := s.listRunning(ctx)
	if err != nil {
		s.log.Warn("monitor: cannot list the guests", "err", err)
		return
	}
	s.met.running.Set(float64(len(running)))
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	qerr := s.ledger.Quorum(lctx)
	var recs []ledger.Record
	lerr := qerr
	if qerr == nil {
		recs, lerr = s.ledger.List(lctx)
	}
	cancel()
	ledgerOK := lerr == nil
	s.met.quorum.Set(b2f(ledgerOK))
	if s.keeper != nil {
		if last := s.keeper.last(); !last.IsZero() {
			s.met.leaseAge.Set(s.clock.Now().Sub(last).Seconds())
		}
	}
	records := map[string]ledger.Record{}
	for _, r := range recs {
		records[r.Guest] = r
	}
	busy, _ := s.guardSnapshot()
	in := MonitorInput{
		Self: s.self, Managed: s.managedSet(), Running: running, Busy: busy,
		Started: s.started.snapshot(), LedgerOK: ledgerOK, Records: records, QuorumMode: s.quorum,
	}
	if !ledgerOK && !s.quorum && len(running) > 0 {
		cached, _ := s.ledger.cached()
		in.Known = map[string]uint64{}
		for _, r := range cached {
			in.Known[r.Guest] = r.Epoch
		}
		in.Peers = s.askPeers(ctx)
	}
	gone := map[string]bool{}
	for _, f := range DecideForeign(in) {
		if !s.acquireAt(f.Guest, gens[f.Guest]) {
			// A request started or is handling it since this round
			// read the ledger: the next round decides again.
			continue
		}
		s.destroyLocked(ctx, f, false)
		s.release(f.Guest, false)
		gone[f.Guest] = true
	}
	var still []hypervisor.Status
	for _, st := range running {
		if !gone[st.Name] {
			still = append(still, st)
		}
	}
	if s.channels != nil {
		s.channels.Sync(ctx, still)
	}
	if ledgerOK {
		heldBack := map[string]bool{}
		for _, st := range still {
			if r, ok := records[st.Name]; ok && r.Owner != s.self {
				heldBack[st.Name] = true
			}
		}
		s.fenceExports(ctx, records, heldBack)
	}
	if s.quorum && ledgerOK {
		s.keepHolds(ctx, still, records)
		if s.cfg.Fencing.AutoFailover && s.failover != nil {
			s.checkFailover(ctx, recs)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// destroy destroys a guest this node must not run, unless a request holds
// it (force: regardless).
func (s *Server) destroy(ctx context.Context, f Foreign, force bool) {
	if !force {
		if !s.acquire(f.Guest) {
			return
		}
		defer s.release(f.Guest, false)
	}
	s.destroyLocked(ctx, f, force)
}

func (s *Server) destroyLocked(ctx context.Context, f Foreign, selfFence bool) {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err := s.driver.Destroy(dctx, f.Guest)
	if errors.Is(err, hypervisor.ErrNotRunning) {
		err = nil
	}
	in := Incident{Time: s.clock.Now().UTC(), Guest: f.Guest, Owner: f.Owner, Epoch: f.Epoch, Reason: f.Reason}
	if err != nil {
		in.Err = err.Error()
		s.log.Error("cannot destroy a guest that must not run here", "guest", f.Guest, "reason", f.Reason, "err", err)
	} else {
		if selfFence {
			s.met.selfFence.Inc()
		} else {
			s.met.foreign.WithLabelValues(f.Guest).Inc()
		}
		s.log.Warn("destroyed a guest that must not run here", "guest", f.Guest, "owner", f.Owner, "epoch", f.Epoch, "reason", f.Reason)
		s.afterGone(ctx, f.Guest)
	}
	kind := events.KindForeign
	if strings.HasPrefix(f.Reason, "self-fence") {
		kind = events.KindSelfFence
	}
	detail := ""
	if f.Owner != "" {
		detail = "the ledger's owner: " + f.Owner
	}
	s.emit(events.Event{Kind: kind, Guest: f.Guest, Epoch: f.Epoch, Detail: detail, Reason: f.Reason, Err: in.Err})
	s.addIncident(in)
}

// selfFence destroys every guest of the cluster file running here (the
// lease keeper's action) and says how many it destroyed.
func (s *Server) selfFence(ctx context.Context, reason string) int {
	running, err := s.listRunning(ctx)
	if err != nil {
		// Cannot tell which run: destroy every guest that may.
		s.log.Error("self-fence: cannot list the guests; destroying each guest of the cluster file", "err", err)
		running = nil
		for _, g := range s.cfg.Guests {
			running = append(running, hypervisor.Status{Name: g.Name})
		}
	}
	n := 0
	managed := s.managedSet()
	for _, st := range running {
		if !managed[st.Name] {
			continue
		}
		if err == nil {
			n++
		}
		s.destroyLocked(ctx, Foreign{Guest: st.Name, Reason: "self-fence: " + reason}, true)
	}
	s.mu.Lock()
	clear(s.held)
	s.mu.Unlock()
	return n
}

// keepHolds takes the leases of the guests this node owns and runs, and
// drops the others'.
func (s *Server) keepHolds(ctx context.Context, running []hypervisor.Status, records map[string]ledger.Record) {
	if s.keeper != nil && !s.keeper.Fresh() {
		// The node's lease lapsed: the keys went with it, take them
		// again once it is back.
		s.mu.Lock()
		clear(s.held)
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	held := map[string]bool{}
	for g := range s.held {
		held[g] = true
	}
	s.mu.Unlock()
	hold, drop := DecideHolds(s.self, running, records, held)
	hctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for _, g := range hold {
		if err := s.ledger.Hold(hctx, g); err != nil {
			s.log.Warn("cannot take a guest's lease", "guest", g, "err", err)
			continue
		}
		s.mu.Lock()
		s.held[g] = true
		s.mu.Unlock()
	}
	for _, g := range drop {
		if err := s.ledger.Drop(hctx, g); err != nil {
			s.log.Debug("cannot drop a guest's lease", "guest", g, "err", err)
		}
		s.mu.Lock()
		delete(s.held, g)
		s.mu.Unlock()
	}
}

// checkFailover starts an automatic failover of every guest whose owner's
// lease expired and that this node should take (ChooseFailover).
func (s *Server) checkFailover(ctx context.Context, recs []ledger.Record) {
	for _, r := range recs {
		s.failoverCheck(ctx, r)
	}
}

// checkFailoverOf is the lease watch's check of one guest: it reads the
// guest's record and starts its failover when due; it says when to look
// again (zero: when the ledger changes).
func (s *Server) checkFailoverOf(ctx context.Context, guest string) time.Time {
	if !s.quorum || !s.cfg.Fencing.AutoFailover || s.failover == nil {
		return time.Time{}
	}
	if s.keeper != nil && !s.keeper.Fresh() {
		// A node that cannot renew its own lease is cut off itself.
		return time.Time{}
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	r, err := s.ledger.Get(rctx, guest)
	cancel()
	if err != nil {
		if !errors.Is(err, ledger.ErrNotFound) {
			s.log.Debug("lease watch: cannot read the guest's record", "guest", guest, "err", err)
		}
		return time.Time{}
	}
	return s.failoverCheck(ctx, r)
}

// failoverCheck starts rec's automatic failover to this node when its
// owner's lease is gone and this node is the one to take it; it says when
// to look again when the record is too young for that (FailoverDue).
func (s *Server) failoverCheck(ctx context.Context, r ledger.Record) time.Time {
	ttl := s.cfg.Timeouts.LeaseTTL
	if ttl <= 0 {
		ttl = configs.DefaultLeaseTTL
	}
	now := s.clock.Now()
	due, recheck := FailoverDue(s.self, r, "", now, ttl)
	if !due && recheck.IsZero() {
		return time.Time{}
	}
	g, ok := s.cfg.Guest(r.Guest)
	if !ok || !s.legsHere(g, "") {
		return time.Time{}
	}
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	holder, err := s.ledger.Holder(hctx, r.Guest)
	cancel()
	if err != nil || holder != "" {
		return time.Time{}
	}
	if !due {
		return recheck
	}
	cands := FailoverCandidates(s.cfg, r.Guest, r.Owner, allNodes(s.cfg))
	alive := s.aliveNodes(ctx, Outranking(s.cfg, r.Guest, s.self, cands))
	if ChooseFailover(s.cfg, s.self, r, holder, now, ttl, alive) {
		s.failover.start(s.baseCtx, r.Guest)
	}
	return time.Time{}
}

func allNodes(cfg *configs.Config) map[string]bool {
	m := map[string]bool{}
	for _, n := range cfg.Nodes {
		m[n.Name] = true
	}
	return m
}

// aliveNodes says which of nodes answer within a second (this one does).
func (s *Server) aliveNodes(ctx context.Context, nodes []string) map[string]bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	out := map[string]bool{s.self: true}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n == s.self {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.client(n).Ledger(ctx); err == nil {
				mu.Lock()
				out[n] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}
