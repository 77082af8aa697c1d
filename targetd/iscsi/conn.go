package iscsi

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mhcodi/mhcodi/iscsi/pdu"
	"github.com/mhcodi/mhcodi/iscsi/text"
	"github.com/mhcodi/mhcodi/targetd/login"
	"github.com/mhcodi/mhcodi/targetd/scsi"
)

// loginMaxData is the data segment limit during login (RFC 7143 §13.12:
// MaxRecvDataSegmentLength does not apply before full feature phase, 8192
// is what every initiator keeps to).
const loginMaxData = 8192

// conn is one TCP connection: its login, then (as the only connection of
// its session) the session's full feature phase.
type conn struct {
	srv *Server
	nc  net.Conn
	src netip.Addr // the remote address, what logins are throttled by
	log *slog.Logger
	r   *pdu.Reader
	rc  syscall.RawConn // the socket, for awaitData; nil if none

	sendMu sync.Mutex
	w      *pdu.Writer
	statSN uint32 // next StatSN; guarded by sendMu
	// unsent are results whose Data-In is queued in w, released after the
	// flush that writes it; guarded by sendMu.
	unsent []scsi.Result

	// inlineOff counts commands the reader hands to workers before it
	// runs one itself again, after one it ran took long (see runInline).
	// Only the reader touches it.
	inlineOff int

	sess     *session                // set once by serve, read only by its goroutines
	sessLive atomic.Pointer[session] // the same, for other goroutines (Shutdown)

	lastRecv  atomic.Int64 // unix nanos of the last PDU received
	closeOnce sync.Once
	closed    chan struct{}
	reason    atomic.Value // string: why it closed
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		srv:    s,
		nc:     nc,
		src:    remoteAddr(nc),
		log:    s.log.With("remote", nc.RemoteAddr().String()),
		r:      pdu.NewReader(nc, 256<<10),
		rc:     rawConn(nc),
		w:      pdu.NewWriter(nc),
		closed: make(chan struct{}),
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
		tc.SetKeepAlive(true)
		tc.SetKeepAlivePeriod(15 * time.Second)
	}
	c.lastRecv.Store(time.Now().UnixNano())
	return c
}

// close ends the connection once; the reason is logged.
func (c *conn) close(reason string) {
	c.closeOnce.Do(func() {
		c.reason.Store(reason)
		close(c.closed)
		c.nc.Close()
	})
}

func (c *conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// drain waits until the connection's session has no running command.
func (c *conn) drain(ctx context.Context) {
	if s := c.sessLive.Load(); s != nil {
		s.waitIdle(ctx)
	}
}

func (c *conn) serve() {
	defer c.close("connection ended")
	if !c.srv.authTurn(c) {
		return
	}
	sess, err := c.login()
	if err != nil {
		// Authentication failures were logged (or counted) by authFailed.
		if !errors.Is(err, io.EOF) && !c.isClosed() && !isAuthFailure(err) {
			c.log.Warn("login failed", "err", err)
		}
		return
	}
	c.sess = sess
	c.sessLive.Store(sess)
	c.log = c.log.With("initiator", sess.initiator, "target", sess.targetName, "tsih", sess.tsih)
	c.log.Info("session started", "discovery", sess.discovery, "chap", sess.chap, "mutual_chap", sess.mutualCHAP, "header_digest", sess.params.HeaderDigest, "data_digest", sess.params.DataDigest)
	err = c.fullFeature()
	reason, _ := c.reason.Load().(string)
	switch {
	case err == nil || errors.Is(err, io.EOF) || c.isClosed():
		c.log.Info("session ended", "reason", firstNonEmpty(reason, "initiator closed the connection"))
	default:
		c.log.Warn("session dropped", "err", err)
	}
	sess.end()
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// login runs the login phase and returns the session it binds to.
func (c *conn) login() (*session, error) {
	deadline := time.Now().Add(c.srv.cfg.LoginTimeout)
	c.nc.SetDeadline(deadline)
	defer c.nc.SetDeadline(time.Time{})

	lg := login.New(login.Config{
		Limits:    c.srv.cfg.Limits,
		Authorize: c.srv.cfg.Authorize,
		Rand:      rand.Reader,
	})
	c.r.MaxDataLen = loginMaxData
	var h pdu.Header
	data := make([]byte, 0, loginMaxData)
	first := true
	chapOK := false // the initiator answered our CHAP challenge
	var cmdSN uint32
	for {
		if err := c.r.ReadHeader(&h); err != nil {
			return nil, fmt.Errorf("reading login request: %w", err)
		}
		if h.Opcode() != pdu.OpLoginReq {
			c.r.SkipData()
			return nil, fmt.Errorf("%v during login: protocol error", h.Opcode())
		}
		data = data[:h.DataLen()]
		if err := c.r.ReadData(data); err != nil {
			return nil, fmt.Errorf("reading login data: %w", err)
		}
		c.lastRecv.Store(time.Now().UnixNano())
		if first {
			cmdSN = h.U32(pdu.OffCmdSN)
			c.statSN = h.U32(pdu.OffExpSN) // ExpStatSN of the first login request
			first = false
		}
		req := login.Request{
			Transit:    h[1]&0x80 != 0,
			Continue:   h[1]&0x40 != 0,
			CSG:        h[1] >> 2 & 3,
			NSG:        h[1] & 3,
			VersionMax: h[2],
			VersionMin: h[3],
			ISID:       h.ISID(),
			TSIH:       h.TSIH(),
			CID:        uint16(h.U32(20) >> 16),
			Data:       data,
		}
		var resp login.Response
		var stepErr error
		if req.TSIH != 0 {
			// Adding a connection to a session: MaxConnections is 1 and
			// ErrorRecoveryLevel 0, so there is nothing to add it to.
			resp = login.RejectResponse(text.StatusSessionDoesNotExist)
			stepErr = fmt.Errorf("login for existing session TSIH %d refused: one connection per session", req.TSIH)
		} else {
			resp, stepErr = lg.Step(req)
		}
		var sess *session
		tsih := req.TSIH
		if stepErr == nil && resp.StatusClass == 0 && lg.Done() {
			var err error
			sess, err = c.bind(lg.Result(), cmdSN)
			if err != nil {
				resp = login.RejectResponse(text.StatusTargetRemoved)
				stepErr = err
			} else {
				tsih = sess.tsih
			}
		}
		// The throttle learns the verdict on a CHAP answer before the
		// initiator does: a source that reconnects at once must find its
		// failure counted.
		if isAuthFailure(stepErr) {
			c.srv.authFailed(c, stepErr)
		} else if !chapOK && lg.Result().CHAP {
			chapOK = true
			c.srv.authSucceeded(c)
		}
		var rh pdu.Header
		rh.SetOpcode(pdu.OpLoginResp)
		flags := resp.CSG<<2 | resp.NSG
		if resp.Transit {
			flags |= 0x80
		}
		if resp.Continue {
			flags |= 0x40
		}
		rh[1] = flags
		rh[2], rh[3] = 0, 0 // VersionMax, VersionActive
		rh.SetISIDTSIH(req.ISID, tsih)
		rh.SetITT(h.ITT())
		rh[36], rh[37] = resp.StatusClass, resp.StatusDetail
		c.sendMu.Lock()
		rh.PutU32(pdu.OffCmdSN, c.statSN)
		if resp.StatusClass == 0 {
			c.statSN++
		}
		rh.PutU32(pdu.OffExpSN, cmdSN)
		rh.PutU32(pdu.OffMaxCmdSN, cmdSN+c.srv.cfg.QueueDepth-1)
		err := c.w.WritePDU(&rh, resp.Data)
		c.sendMu.Unlock()
		if err != nil {
			if sess != nil {
				sess.end()
			}
			return nil, fmt.Errorf("sending login response: %w", err)
		}
		if stepErr != nil {
			return nil, stepErr
		}
		if resp.StatusClass != 0 {
			return nil, fmt.Errorf("login refused: status 0x%02x%02x", resp.StatusClass, resp.StatusDetail)
		}
		if sess != nil {
			return sess, nil
		}
	}
}

// bind makes the session a finished login asked for.
func (c *conn) bind(res login.Result, cmdSN uint32) (*session, error) {
	sess := newSession(c, res, cmdSN)
	if !sess.discovery {
		t, ok := c.srv.cfg.Lookup(res.TargetName)
		if !ok {
			return nil, fmt.Errorf("target %q vanished during login", res.TargetName)
		}
		sess.target = t
	}
	c.srv.register(sess)
	return sess, nil
}

// send writes one PDU that carries the connection's StatSN and the
// session's CmdSN window. advance says whether it consumes a StatSN. PDUs
// queued before it go out first, in the same writev.
func (c *conn) send(h *pdu.Header, data []byte, advance bool) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.queueLocked(h, data, advance)
	return c.flushLocked()
}

// queueLocked stamps a PDU like send and queues it for flushLocked; data
// must stay valid until then. c.sendMu is held.
func (c *conn) queueLocked(h *pdu.Header, data []byte, advance bool) {
	h.PutU32(pdu.OffCmdSN, c.statSN)
	if advance {
		c.statSN++
	}
	exp, max := c.sess.window()
	h.PutU32(pdu.OffExpSN, exp)
	h.PutU32(pdu.OffMaxCmdSN, max)
	c.w.Queue(h, data)
}

// flushLocked writes what is queued, then gives back the Data-In buffers
// of the results whose PDUs it held. c.sendMu is held.
func (c *conn) flushLocked() error {
	err := c.w.Flush()
	if len(c.unsent) > 0 {
		for i := range c.unsent {
			c.sess.target.Release(&c.unsent[i])
		}
		clear(c.unsent)
		c.unsent = c.unsent[:0]
	}
	if err != nil {
		c.close("write failed: " + err.Error())
	}
	return err
}

// flush writes what the reader queued.
func (c *conn) flush() error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.flushLocked()
}

// reject sends a Reject PDU carrying the offending header.
func (c *conn) reject(reason byte, bad *pdu.Header) error {
	var h pdu.Header
	h.SetOpcode(pdu.OpReject)
	h[1] = 0x80
	h[2] = reason
	h.SetITT(pdu.Reserved)
	hdr := append([]byte(nil), bad[:]...)
	return c.send(&h, hdr, true)
}

// Reject reasons (RFC 7143 §11.17.1).
const (
	rejectDataDigest     = 0x02
	rejectSNACK          = 0x03
	rejectProtocolError  = 0x04
	rejectNotSupported   = 0x05
	rejectImmediate      = 0x06
	rejectTaskInProgress = 0x07
	rejectInvalidField   = 0x09
	rejectOutOfResources = 0x0a
	rejectWaitingLogout  = 0x0c
)
