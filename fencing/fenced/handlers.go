package fenced

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/fencing/ops"
	"github.com/mhcodi/mhcodi/targetd/controlapi"
)

func umask(m int) int { return syscall.Umask(m) }

// identity is who sent a request: identityLocal for the root-only socket
// (and the in-process loopback), else the name in the client certificate.
type identityKey struct{}

const identityLocal = "local"

func withIdentity(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

func identityOf(r *http.Request) string {
	id, _ := r.Context().Value(identityKey{}).(string)
	return id
}

// NodeStatusResponse is PathNode's answer: api.NodeStatus and the guests
// this node destroyed on its own (clients that decode api.NodeStatus
// ignore them).
type NodeStatusResponse struct {
	api.NodeStatus
	Destroyed []Incident `json:"destroyed,omitempty"`
}

// mux routes the API; every handler trusts the identity the listener's
// wrapper put in the context.
func (s *Server) mux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET "+api.PathNode, s.handleNode)
	m.HandleFunc("GET "+api.PathLedger, s.handleLedger)
	m.HandleFunc("POST "+api.PathFence, s.handleFence)
	m.HandleFunc("POST "+api.PathStart, s.handleStart)
	m.HandleFunc("POST "+api.PathStop, s.handleStop)
	m.HandleFunc("POST "+api.PathDestroy, s.handleDestroy)
	m.HandleFunc("POST "+api.PathOp, s.handleOp)
	m.HandleFunc("POST "+api.PathJoin, s.handleJoin)
	m.HandleFunc("GET "+api.PathCluster, s.handleCluster)
	m.HandleFunc("GET "+api.PathConfig, s.handleConfig)
	m.HandleFunc("GET "+api.PathConsole, s.handleConsole)
	m.HandleFunc("GET "+api.PathEvents, s.handleEvents)
	return m
}

// localHandler serves the root-only socket: the caller is root on this
// node (the socket's mode says so).
func (s *Server) localHandler() http.Handler {
	m := s.mux()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.ServeHTTP(w, r.WithContext(withIdentity(r.Context(), identityLocal)))
	})
}

// TLSHandler serves the HTTPS listener: only a cluster node's or the
// admin's certificate gets through; anything else is refused and logged
// with its address, as it is someone outside the cluster knocking.
func (s *Server) TLSHandler() http.Handler {
	m := s.mux()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, err := s.peerName(r.TLS)
		if err == nil {
			if _, ok := s.cfg.Node(name); !ok && name != AdminName {
				err = fmt.Errorf("%q is neither a node of cluster %s nor %s", name, s.cfg.Cluster.Name, AdminName)
			}
		}
		if err != nil {
			s.met.refused.Inc()
			s.log.Warn("refused a request from outside the cluster", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "err", err)
			writeError(w, http.StatusForbidden, "forbidden: not a member of this cluster")
			return
		}
		m.ServeHTTP(w, r.WithContext(withIdentity(r.Context(), name)))
	})
}

// HTTPServers make the two servers; the TLS one logs handshake failures
// (a client certificate of another CA never reaches the handler) through
// slog with the remote address.
func (s *Server) HTTPServers() (tlsSrv, localSrv *http.Server) {
	errLog := log.New(slogWriter{s.log}, "", 0)
	tlsSrv = &http.Server{Handler: s.TLSHandler(), TLSConfig: nil, ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout: time.Minute, ErrorLog: errLog}
	localSrv = &http.Server{Handler: s.localHandler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: errLog}
	return tlsSrv, localSrv
}

// slogWriter turns net/http's error log lines (TLS handshake errors carry
// "from <addr>") into warnings.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Warn("http server", "msg", string(trimNL(p)))
	return len(p), nil
}

func trimNL(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, api.ErrorBody{Error: fmt.Sprintf(format, args...)})
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad request: %v", err)
		return false
	}
	return true
}

// NodeStatus gathers what this node says about itself.
func (s *Server) NodeStatus(ctx context.Context) (NodeStatusResponse, error) {
	n, _ := s.cfg.Node(s.self)
	st := api.NodeStatus{Node: s.self, Role: n.Role, Time: s.clock.Now().UTC(), Guests: []hypervisor.Status{}, Exports: []api.Export{}}
	if st.Role == "" {
		st.Role = configs.RoleStorage
	}
	var wg sync.WaitGroup
	var qerr, gerr, xerr error
	var exports []controlapi.ExportInfo
	wg.Add(1)
	go func() {
		defer wg.Done()
		qctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		defer cancel()
		qerr = s.ledger.Quorum(qctx)
	}()
	if !s.witness {
		wg.Add(2)
		go func() {
			defer wg.Done()
			gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			var gs []hypervisor.Status
			gs, gerr = s.driver.List(gctx)
			if gs != nil {
				st.Guests = gs
			}
		}()
		go func() {
			defer wg.Done()
			xctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			exports, xerr = s.targetd.Exports(xctx)
		}()
	}
	wg.Wait()
	st.Quorum = qerr == nil
	if qerr != nil {
		st.LedgerErr = qerr.Error()
	}
	if gerr != nil {
		// Without the guests the answer would say none runs here, and
		// an operation could act on that: refuse instead.
		return NodeStatusResponse{}, fmt.Errorf("listing the guests: %w", gerr)
	}
	if xerr != nil {
		s.log.Warn("node status without exports: targetd does not answer", "err", xerr)
	}
	for _, e := range exports {
		owner := ""
		if e.Fence.Owner != "" {
			if o, ok := s.cfg.NodeOfInitiator(e.Fence.Owner); ok {
				owner = o
			} else {
				owner = e.Fence.Owner
			}
		}
		st.Exports = append(st.Exports, api.Export{Guest: e.Guest, Disk: e.Disk, Target: e.Target, Owner: owner, Epoch: e.Fence.Epoch, Sessions: e.Sessions, SyncError: e.SyncError})
	}
	if s.channels != nil {
		st.Legs = s.channels.Legs()
		st.Stalled = StalledArrays(s.channels.Arrays(), s.clock.Now())
	}
	if !s.witness {
		st.Bridges = s.bridges()
	}
	if fs, err := procfs.NewFS(s.procFS); err == nil {
		if mi, err := fs.Meminfo(); err == nil && mi.MemAvailable != nil {
			st.MemoryFreeMiB = *mi.MemAvailable / 1024
		}
	}
	return NodeStatusResponse{NodeStatus: st, Destroyed: s.Incidents()}, nil
}

// bridges reads this node's bridge of every service network (once per
// bridge name), so that a plan can refuse a start here before the epoch
// moves, and verify can say which is missing.
func (s *Server) bridges() []hypervisor.BridgeInfo {
	out := []hypervisor.BridgeInfo{}
	seen := map[string]bool{}
	for _, nw := range s.cfg.NetworkNames() {
		b := s.cfg.BridgeFor(s.self, nw)
		if b == "" || seen[b] {
			continue
		}
		seen[b] = true
		out = append(out, s.hostNet.Bridge(b))
	}
	return out
}

func (s *Server) handleNode(w http.ResponseWriter, r *http.Request) {
	st, err := s.NodeStatus(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "node status of %s: %v", s.self, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// LedgerAnswer reads the ledger; without quorum it answers the last
// records read, marked stale, so that a returning node still learns
// about a newer epoch.
func (s *Server) LedgerAnswer(ctx context.Context) api.LedgerResponse {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out := api.LedgerResponse{Node: s.self}
	qerr := s.ledger.Quorum(ctx)
	recs, err := s.ledger.List(ctx)
	if err != nil {
		recs, _ = s.ledger.cached()
		out.Stale = true
	}
	out.Quorum = qerr == nil
	out.Stale = out.Stale || qerr != nil
	if recs == nil {
		recs = []ledger.Record{}
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Guest < recs[j].Guest })
	out.Records = recs
	out.Revision = s.ledger.revision()
	return out
}

func (s *Server) handleLedger(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.LedgerAnswer(r.Context()))
}

// legsHere says whether guest (disk, or any disk) has a leg on this node.
func (s *Server) legsHere(g *configs.Guest, disk string) bool {
	for _, d := range g.Disks {
		if disk != "" && d.Name != disk {
			continue
		}
		if slices.Contains(d.Legs, s.self) {
			return true
		}
	}
	return false
}

func (s *Server) handleFence(w http.ResponseWriter, r *http.Request) {
	var req api.FenceRequest
	if !decode(w, r, &req) {
		return
	}
	if s.witness {
		writeError(w, http.StatusConflict, "%s is a witness: it holds no legs", s.self)
		return
	}
	g, ok := s.cfg.Guest(req.Guest)
	if !ok {
		writeError(w, http.StatusNotFound, "guest %q is not in the cluster file", req.Guest)
		return
	}
	if _, ok := s.cfg.Node(req.Owner); !ok || req.Epoch == 0 {
		writeError(w, http.StatusBadRequest, "owner %q must be a node of the cluster file and the epoch non-zero", req.Owner)
		return
	}
	if !s.legsHere(g, req.Disk) {
		writeError(w, http.StatusNotFound, "%s holds no leg of %s/%s", s.self, req.Guest, orStar(req.Disk))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	res, err := s.targetd.Fence(ctx, controlapi.FenceRequest{Guest: req.Guest, Disk: req.Disk, Owner: req.Owner, Epoch: req.Epoch})
	switch {
	case errors.Is(err, controlapi.ErrStaleEpoch):
		s.log.Warn("fence refused: stale epoch", "guest", req.Guest, "owner", req.Owner, "epoch", req.Epoch, "err", err)
		writeError(w, http.StatusConflict, "fence %s at epoch %d: %v", req.Guest, req.Epoch, err)
	case err != nil:
		s.log.Error("fence failed", "guest", req.Guest, "owner", req.Owner, "epoch", req.Epoch, "err", err)
		writeError(w, http.StatusBadGateway, "fence %s: %v", req.Guest, err)
	default:
		s.log.Info("legs fenced", "guest", req.Guest, "disk", req.Disk, "owner", req.Owner, "epoch", req.Epoch,
			"targets", len(res.Targets), "dropped_sessions", res.Dropped, "by", identityOf(r))
		writeJSON(w, http.StatusOK, res)
	}
}

func orStar(s string) string {
	if s == "" {
		return "*"
	}
	return s
}

// refusal is a Start refused by a check, with its HTTP status.
type refusal struct {
	code int
	msg  string
}

func (e *refusal) Error() string { return e.msg }

func refuse(code int, format string, args ...any) error {
	return &refusal{code: code, msg: fmt.Sprintf(format, args...)}
}

// CheckStart is Start's rule: the ledger must name this node the owner
// at the request's epoch, with the guest meant to run.
func CheckStart(self string, rec ledger.Record, epoch uint64) error {
	switch {
	case rec.Owner != self:
		return fmt.Errorf("the ledger gives it to %q at epoch %d, not to %s", rec.Owner, rec.Epoch, self)
	case rec.Epoch != epoch:
		return fmt.Errorf("the ledger is at epoch %d, the request carries %d", rec.Epoch, epoch)
	case rec.Desired != ledger.DesiredRunning:
		return fmt.Errorf("the ledger wants it %s", rec.Desired)
	}
	return nil
}

// StartGuest checks the ledger and starts guest here.
func (s *Server) StartGuest(ctx context.Context, guest string, req api.StartRequest) error {
	if s.witness {
		return refuse(http.StatusConflict, "%s is a witness: it runs no guests", s.self)
	}
	if _, ok := s.cfg.Guest(guest); !ok {
		return refuse(http.StatusNotFound, "guest %q is not in the cluster file", guest)
	}
	if !s.acquire(guest) {
		return refuse(http.StatusConflict, "another request for %s is in progress on %s", guest, s.self)
	}
	started := false
	defer func() { s.release(guest, started) }()
	if s.quorum && s.keeper != nil && !s.waitLeaseFresh(ctx, leaseFreshWait) {
		return refuse(http.StatusConflict, "start %s: %s's lease is not fresh, it cannot own guests now", guest, s.self)
	}
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := s.ledger.Quorum(lctx); err != nil {
		return refuse(http.StatusServiceUnavailable, "start %s: the ledger cannot confirm the owner: %v", guest, err)
	}
	rec, err := s.ledger.Get(lctx, guest)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return refuse(http.StatusConflict, "start %s: the ledger has no record of it", guest)
	case err != nil:
		return refuse(http.StatusServiceUnavailable, "start %s: reading the ledger: %v", guest, err)
	}
	if err := CheckStart(s.self, rec, req.Epoch); err != nil {
		return refuse(http.StatusConflict, "start %s on %s refused: %v", guest, s.self, err)
	}
	stale := rec.StaleLegs()
	for _, n := range req.Stale {
		stale[n] = true
	}
	hostInfo, err := fencing.HostInfoJSON(s.cfg, guest, s.self, rec.Epoch, stale)
	if err != nil {
		return fmt.Errorf("start %s: %w", guest, err)
	}
	opts := slices.Clone(s.specOpts)
	if s.cfg.Security.CHAPSecrets != "" {
		secrets, err := s.cfg.LoadCHAPSecrets()
		if err != nil {
			return fmt.Errorf("start %s: %w", guest, err)
		}
		opts = append(opts, hypervisor.WithCHAP(secrets))
	}
	opts = append(opts, hypervisor.WithStale(stale))
	spec, err := hypervisor.SpecFor(s.cfg, guest, s.self, hostInfo, opts...)
	if err != nil {
		return fmt.Errorf("start %s: %w", guest, err)
	}
	// Recorded before the start: the monitor must never see this run
	// without the epoch it belongs to.
	if err := s.started.set(guest, rec.Epoch); err != nil {
		return fmt.Errorf("start %s: recording its epoch: %w", guest, err)
	}
	started = true
	if err := s.driver.Start(ctx, spec); err != nil {
		if errors.Is(err, hypervisor.ErrAlreadyRunning) {
			return refuse(http.StatusConflict, "%v", err)
		}
		return fmt.Errorf("start %s: %w", guest, err)
	}
	s.log.Info("guest started", "guest", guest, "epoch", rec.Epoch, "stale", sortedKeys(stale))
	if s.quorum {
		hctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if err := s.ledger.Hold(hctx, guest); err != nil {
			s.log.Warn("cannot take the guest's lease yet; the monitor retries", "guest", guest, "err", err)
		} else {
			s.mu.Lock()
			s.held[guest] = true
			s.mu.Unlock()
		}
	}
	s.kickMonitor()
	return nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func writeRefusal(w http.ResponseWriter, err error) {
	var rf *refusal
	if errors.As(err, &rf) {
		writeError(w, rf.code, "%s", rf.msg)
		return
	}
	writeError(w, http.StatusInternalServerError, "%v", err)
}

func (s *Server) handleStart(w http.ResponseWriter, r *http.Request) {
	var req api.StartRequest
	if !decode(w, r, &req) {
		return
	}
	guest := r.PathValue("guest")
	if err := s.StartGuest(r.Context(), guest, req); err != nil {
		s.log.Warn("start refused or failed", "guest", guest, "epoch", req.Epoch, "by", identityOf(r), "err", err)
		writeRefusal(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// stopOrDestroy runs one of the two on guest; a guest that does not run
// here is already where the caller wants it.
func (s *Server) stopOrDestroy(ctx context.Context, guest string, stop bool, timeout time.Duration) error {
	if s.witness {
		return refuse(http.StatusConflict, "%s is a witness: it runs no guests", s.self)
	}
	if !s.acquireWait(ctx, guest) {
		return refuse(http.StatusConflict, "another request for %s was still in progress on %s when this one gave up: %v", guest, s.self, context.Cause(ctx))
	}
	defer s.release(guest, false)
	var err error
	if stop {
		if timeout <= 0 {
			timeout = s.cfg.Hypervisor.StopTimeout
		}
		err = s.driver.Stop(ctx, guest, timeout)
	} else {
		err = s.driver.Destroy(ctx, guest)
	}
	if err != nil && !errors.Is(err, hypervisor.ErrNotRunning) {
		return err
	}
	s.afterGone(ctx, guest)
	return nil
}

// afterGone drops the lease and the started epoch of a guest that no
// longer runs here.
func (s *Server) afterGone(ctx context.Context, guest string) {
	if err := s.started.forget(guest); err != nil {
		s.log.Warn("cannot forget the guest's epoch", "guest", guest, "err", err)
	}
	s.mu.Lock()
	held := s.held[guest]
	delete(s.held, guest)
	s.mu.Unlock()
	if held {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := s.ledger.Drop(dctx, guest); err != nil {
			s.log.Debug("cannot drop the guest's lease (it lapses with the node's)", "guest", guest, "err", err)
		}
	}
}

func (s *Server) handleStop(w http.ResponseWriter, r *http.Request) {
	var req api.StopRequest
	if !decode(w, r, &req) {
		return
	}
	guest := r.PathValue("guest")
	if err := s.stopOrDestroy(r.Context(), guest, true, req.Timeout); err != nil {
		s.log.Warn("stop failed", "guest", guest, "err", err)
		writeRefusal(w, err)
		return
	}
	s.log.Info("guest stopped", "guest", guest, "by", identityOf(r))
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) handleDestroy(w http.ResponseWriter, r *http.Request) {
	guest := r.PathValue("guest")
	if err := s.stopOrDestroy(r.Context(), guest, false, 0); err != nil {
		s.log.Warn("destroy failed", "guest", guest, "err", err)
		writeRefusal(w, err)
		return
	}
	s.log.Info("guest destroyed", "guest", guest, "by", identityOf(r))
	writeJSON(w, http.StatusOK, struct{}{})
}

// handleOp streams an operation's progress as NDJSON. Only the local
// socket may ask: an operation acts on the whole cluster with this node's
// authority, which the other nodes' certificates do not carry. The
// operation runs on the daemon's context, not the request's: a CLI that
// goes away mid-way must not leave a failover half done.
func (s *Server) handleOp(w http.ResponseWriter, r *http.Request) {
	if identityOf(r) != identityLocal {
		writeError(w, http.StatusForbidden, "operations are taken on the local socket only")
		return
	}
	var req api.OpRequest
	if !decode(w, r, &req) {
		return
	}
	if s.op == nil {
		writeError(w, http.StatusNotImplemented, "this fenced has no operator")
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	var mu sync.Mutex
	done := false
	enc := json.NewEncoder(w)
	emit := func(p api.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if done {
			return
		}
		if p.Time.IsZero() {
			p.Time = s.clock.Now().UTC()
		}
		done = p.Done
		_ = enc.Encode(p)
		if fl != nil {
			fl.Flush()
		}
	}
	s.log.Info("operation", "op", req.Op, "guest", req.Guest, "node", req.Node, "to", req.To, "force", req.Force)
	err := s.recordOp(s.baseCtx, req.Op, req.Guest, opDetail(req), func() error { return s.op.Run(s.baseCtx, req, emit) })
	last := api.Progress{Step: "done", Message: "done", Done: true}
	if err != nil {
		last.Message, last.Err, last.Hint = "failed", err.Error(), ops.HintOf(err)
		s.log.Warn("operation failed", "op", req.Op, "guest", req.Guest, "err", err)
	}
	emit(last)
}

// handleCluster gathers the whole cluster's view for the local CLI (which
// has no certificates of its own).
func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) {
	if identityOf(r) != identityLocal {
		writeError(w, http.StatusForbidden, "the cluster view is served on the local socket only")
		return
	}
	v, err := ops.Gather(r.Context(), Env{s: s})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "gathering the cluster's view: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) handleConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.ConfigInfo{Node: s.self, Path: s.cfg.Path, Digest: ops.ConfigDigest(s.cfg)})
}

func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req api.JoinRequest
	if !decode(w, r, &req) {
		return
	}
	id := identityOf(r)
	if id != req.Node && id != AdminName && id != identityLocal {
		writeError(w, http.StatusForbidden, "%s may not ask to add %s", id, req.Node)
		return
	}
	if _, ok := s.cfg.Node(req.Node); !ok {
		writeError(w, http.StatusBadRequest, "node %q is not in the cluster file", req.Node)
		return
	}
	s.memberMu.Lock()
	m := s.member
	s.memberMu.Unlock()
	if m == nil {
		writeError(w, http.StatusConflict, "%s runs no ledger member (external etcd, or restarting)", s.self)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	ic, err := m.AddMember(ctx, req.Node, req.PeerURL)
	resp := api.JoinResponse{InitialCluster: ic}
	if err != nil {
		s.log.Warn("join refused", "joiner", req.Node, "peer_url", req.PeerURL, "err", err)
		writeError(w, http.StatusConflict, "adding %s: %v", req.Node, err)
		return
	}
	s.log.Info("member added", "joiner", req.Node, "peer_url", req.PeerURL)
	writeJSON(w, http.StatusOK, resp)
}

// leaseFreshWait is how long a start waits for this node's lease to be
// renewed: right after fenced starts (or the ledger regains quorum) the
// lease keeper needs a step or two, and the caller has already claimed the
// guest for this node by then.
const leaseFreshWait = 5 * time.Second

// waitLeaseFresh waits up to d for the lease keeper to call the lease
// fresh.
func (s *Server) waitLeaseFresh(ctx context.Context, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !s.keeper.Fresh() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
	return true
}
