// Package iscsi is targetd's iSCSI transport (RFC 7143, ErrorRecoveryLevel
// 0, one connection per session): it accepts connections, runs the login
// through package login, and in full feature phase turns SCSI Command,
// Data-Out, task management, NOP, text and logout PDUs into calls on a
// SCSITarget and PDUs back. Commands of a session run concurrently up to the
// CmdSN window; responses go out as they finish.
package iscsi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mhcodi/mhcodi/targetd/controlapi"
	"github.com/mhcodi/mhcodi/targetd/login"
	"github.com/mhcodi/mhcodi/targetd/scsi"
)

// SCSITarget is what one exported iSCSI target offers the transport.
type SCSITarget interface {
	scsi.Executor
	// AbortTask aborts the task tag of nexus n on lun; false if unknown.
	AbortTask(lun uint64, n scsi.Nexus, tag uint32) bool
	// AbortTaskSet aborts every task of nexus n on lun.
	AbortTaskSet(lun uint64, n scsi.Nexus)
	// ResetLU is a LOGICAL UNIT RESET; false if the LUN does not exist.
	ResetLU(lun uint64, by scsi.Nexus) bool
	// ResetTarget is a TARGET WARM RESET.
	ResetTarget(by scsi.Nexus)
	// NexusLost tells the SCSI layer a nexus is gone (session closed).
	NexusLost(n scsi.Nexus)
	// Release returns a result's pooled buffers after it was sent.
	Release(res *scsi.Result)
	// HasLUN reports whether lun exists.
	HasLUN(lun uint64) bool
}

// Config configures a Server.
type Config struct {
	// Lookup finds an exported target by IQN.
	Lookup func(name string) (SCSITarget, bool)
	// Discover lists what a SendTargets from initiator may see.
	Discover func(initiator string) []login.TargetInfo
	// Authorize decides who may log in to what, and with which CHAP.
	Authorize func(initiator, target string, discovery bool) (login.Decision, error)
	// Limits are this target's login limits and wishes.
	Limits login.Limits
	// TPGT is the target portal group tag reported in the nexus.
	TPGT uint16
	// QueueDepth is the CmdSN window: commands in flight per session.
	QueueDepth uint32
	// NopInterval is how long a connection may be idle before targetd
	// pings the initiator; NopTimeout how long it waits for the answer
	// before dropping the connection. Zero disables pings.
	NopInterval, NopTimeout time.Duration
	// IdleKick: when an initiator has been quiet this long after sending
	// something, targetd sends it one NOP-In that asks for no answer and
	// carries the current CmdSN window (RFC 7143 §11.19). QEMU's libiscsi
	// initiator can miss the wake-up for commands it has queued and sit
	// idle until any PDU arrives; this nudge turns multi-second stalls
	// into a 100 ms hiccup. Zero means 100 ms, negative disables it.
	IdleKick time.Duration
	// LoginTimeout bounds the whole login phase.
	LoginTimeout time.Duration
	// AuthDelay throttles CHAP guessing: after a login from a source (a
	// remote IP address) fails to authenticate, its next login is served
	// only AuthDelay later, twice that after a second failure, and so on
	// up to AuthMaxDelay; logins arriving together take turns. A CHAP
	// login that succeeds forgets the source's failures. Zero means 1 s
	// (AuthMaxDelay 4 s); negative disables the throttle.
	AuthDelay, AuthMaxDelay time.Duration
	// AuthLogWindow: the first authentication failure of a source is
	// logged, the ones within this window after it are summed up in one
	// line at its end. Zero means one minute.
	AuthLogWindow time.Duration
	// ReadBudget bounds the bytes of Data-In buffers that the server's
	// large reads (over 64 KiB) hold at once, over all sessions: such a
	// read waits for its share before it reads, and gives it back once its
	// Data-In was written. Zero means 8 MiB.
	ReadBudget int64
	// WriteBudget bounds the bytes of write buffers that the server's
	// large writes (over 64 KiB) hold at once, over all sessions: such a
	// write gets its buffer, and its first R2T, when the budget has room;
	// until then it holds only its first burst. Zero means 8 MiB.
	WriteBudget int64
	// Observe, if set, is called after every SCSI command.
	Observe func(Event)
	Logger  *slog.Logger
}

// Event describes one finished SCSI command, for metrics and the write log.
type Event struct {
	Target    string
	Initiator string
	ISID      string
	LUN       uint64
	Opcode    byte
	Write     bool
	Bytes     int
	Status    scsi.Status
	Aborted   bool
	Duration  time.Duration
}

const (
	defaultQueueDepth   = 128
	defaultLoginTimeout = 15 * time.Second
	defaultIdleKick     = 100 * time.Millisecond
	defaultReadBudget   = 8 << 20
	defaultWriteBudget  = 8 << 20
)

// Server serves iSCSI on any number of listeners. There is no global state:
// several servers live in one process.
type Server struct {
	cfg  Config
	log  *slog.Logger
	bufs bufPool
	// budget bounds the Data-In buffers of large reads (Config.ReadBudget).
	budget *byteBudget
	// writeBudget bounds the buffers of large writes (Config.WriteBudget).
	writeBudget *byteBudget
	// spinners counts readers polling their socket (awaitData), at most
	// maxSpinners.
	spinners    atomic.Int32
	maxSpinners int32

	authMu     sync.Mutex
	auth       *authThrottle // nil: no throttle
	authTimer  *time.Timer   // ends the throttle's log windows
	authClosed bool

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	sessions  map[sessionKey]*session
	nextTSIH  uint16
	closed    bool
	wg        sync.WaitGroup
}

// sessionKey identifies a session for reinstatement (RFC 7143 §6.3.5).
type sessionKey struct {
	initiator, target string
	isid              [6]byte
}

// NewServer makes a server; it serves nothing until Serve.
func NewServer(cfg Config) *Server {
	if cfg.QueueDepth == 0 {
		cfg.QueueDepth = defaultQueueDepth
	}
	if cfg.IdleKick == 0 {
		cfg.IdleKick = defaultIdleKick
	}
	if cfg.LoginTimeout == 0 {
		cfg.LoginTimeout = defaultLoginTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ReadBudget <= 0 {
		cfg.ReadBudget = defaultReadBudget
	}
	if cfg.WriteBudget <= 0 {
		cfg.WriteBudget = defaultWriteBudget
	}
	if cfg.AuthDelay == 0 {
		cfg.AuthDelay = defaultAuthDelay
		if cfg.AuthMaxDelay == 0 {
			cfg.AuthMaxDelay = defaultAuthMaxDelay
		}
	}
	cfg.AuthMaxDelay = max(cfg.AuthMaxDelay, cfg.AuthDelay)
	if cfg.AuthLogWindow <= 0 {
		cfg.AuthLogWindow = defaultAuthLogWindow
	}
	s := &Server{
		cfg:         cfg,
		log:         cfg.Logger,
		listeners:   map[net.Listener]struct{}{},
		conns:       map[*conn]struct{}{},
		sessions:    map[sessionKey]*session{},
		budget:      newByteBudget(cfg.ReadBudget),
		writeBudget: newByteBudget(cfg.WriteBudget),
		// A quarter of the cores at most poll for the next request.
		maxSpinners: spinners(runtime.GOMAXPROCS(0)),
	}
	if cfg.AuthDelay > 0 {
		s.auth = newAuthThrottle(cfg.AuthDelay, cfg.AuthMaxDelay, cfg.AuthLogWindow)
	}
	return s
}

// spinners is how many readers may poll their sockets at once with procs
// Ps: a quarter, at least one, none when one P would be all of them.
func spinners(procs int) int32 {
	if procs < 2 {
		return 0
	}
	return int32(max(1, procs/4))
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("iscsi: server closed")

// Serve accepts connections on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("iscsi: accept: %w", err)
		}
		delay = 0
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops the listeners and drops every connection, aborting what runs;
// it returns when every connection's goroutines are gone.
func (s *Server) Close() error {
	return s.Shutdown(context.Background(), false)
}

// Shutdown stops accepting; with graceful set it lets commands that are
// already running finish (until ctx ends) before the connections close.
func (s *Server) Shutdown(ctx context.Context, graceful bool) error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		if graceful {
			c.drain(ctx)
		}
		c.close("target shutting down")
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.closeAuth()
	return err
}

// SessionInfo describes one session; the control API's contract
// defines it, since GET /v1/sessions serves it.
type SessionInfo = controlapi.SessionInfo

// Sessions lists the sessions in full feature phase.
func (s *Server) Sessions() []SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]SessionInfo, 0, len(s.sessions))
	for _, ss := range s.sessions {
		out = append(out, ss.info())
	}
	return out
}

// DropSessions ends every session for which drop returns true and waits
// until none of their commands can still write: when it returns, the
// dropped initiators' I/O is fenced off (new logins are the Authorize
// callback's business). It returns how many sessions it dropped.
func (s *Server) DropSessions(reason string, drop func(SessionInfo) bool) int {
	s.mu.Lock()
	var victims []*session
	for _, ss := range s.sessions {
		if drop(ss.info()) {
			victims = append(victims, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range victims {
		ss.close(reason)
	}
	return len(victims)
}

// register makes sess the session for its key, reinstating (closing) an
// older one with the same initiator, ISID and target, and gives it a TSIH.
func (s *Server) register(sess *session) {
	key := sessionKey{sess.initiator, sess.targetName, sess.isid}
	s.mu.Lock()
	old := s.sessions[key]
	s.mu.Unlock()
	if old != nil {
		s.log.Info("session reinstatement", "initiator", sess.initiator, "target", sess.targetName, "isid", sess.nexus.ISID, "old_tsih", old.tsih)
		old.close("session reinstatement")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		s.nextTSIH++
		if s.nextTSIH == 0 {
			continue
		}
		if !s.tsihInUse(s.nextTSIH) {
			break
		}
	}
	sess.tsih = s.nextTSIH
	s.sessions[key] = sess
}

func (s *Server) tsihInUse(t uint16) bool {
	for _, ss := range s.sessions {
		if ss.tsih == t {
			return true
		}
	}
	return false
}

func (s *Server) unregister(sess *session) {
	key := sessionKey{sess.initiator, sess.targetName, sess.isid}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[key] == sess {
		delete(s.sessions, key)
	}
}

// sessionsOf returns the sessions logged in to target.
func (s *Server) sessionsOf(target string) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*session
	for k, ss := range s.sessions {
		if k.target == target {
			out = append(out, ss)
		}
	}
	return out
}
