package iscsiclient

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/iscsi/pdu"
)

// CHAP are CHAP credentials: a name and a secret.
type CHAP struct{ User, Secret string }

// Config describes one session.
type Config struct {
	// Portal is the target's "ip:port".
	Portal       string
	TargetIQN    string
	InitiatorIQN string
	// CHAP, when set, answers the target's challenge; the target decides
	// whether it asks.
	CHAP *CHAP
	// MutualCHAP, when set (with CHAP), makes the login challenge the
	// target back: it must answer as User (its IQN) with Secret, or the
	// login fails with a TargetAuthError. Without it an impostor on the
	// target's address would get our writes.
	MutualCHAP *CHAP
	// Rand is where mutual CHAP's challenges come from (default
	// crypto/rand.Reader).
	Rand io.Reader
	// HeaderDigest offers CRC32C header digests.
	HeaderDigest bool
	// LoginTimeout bounds connecting and logging in (default 10 s).
	LoginTimeout time.Duration
	// PingInterval is how often a NOP-Out ping is sent (default 5 s;
	// negative disables pings); PingTimeout how long its answer may take
	// before the connection is declared dead (default 5 s).
	PingInterval, PingTimeout time.Duration
	// LUN is the logical unit addressed (default 0).
	LUN uint64
	// ISID is the initiator session ID; zero derives a stable one from the
	// initiator and target names, so a new login reinstates (and ends at
	// the target) a session of ours the target still holds.
	ISID [6]byte
	// Logger receives connection events (default: discard).
	Logger *slog.Logger
	// Dial opens the TCP connection (default net.Dialer).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (c *Config) defaults() {
	if c.LoginTimeout <= 0 {
		c.LoginTimeout = 10 * time.Second
	}
	if c.PingInterval == 0 {
		c.PingInterval = 5 * time.Second
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = 5 * time.Second
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Dial == nil {
		var d net.Dialer
		c.Dial = d.DialContext
	}
	if c.ISID == ([6]byte{}) {
		sum := sha256.Sum256([]byte(c.InitiatorIQN + "\x00" + c.TargetIQN))
		// Type 10b (random), A reserved: RFC 7143 §11.12.5.
		c.ISID = [6]byte{0x80, sum[0], sum[1], sum[2], sum[3], sum[4]}
	}
}

// Session is a logged-in iSCSI session. Its methods are safe for
// concurrent use. Once the connection is lost the session is finished:
// every outstanding and later command fails with ErrConnectionLost, and
// Done is closed.
type Session struct {
	cfg    Config
	nc     net.Conn
	r      *pdu.Reader
	w      *pdu.Writer
	log    *slog.Logger
	params Params

	mu      sync.Mutex
	eng     *engine
	sendq   []outPDU
	sendSig chan struct{} // capacity 1: the writer has work
	window  chan struct{} // closed and replaced when the window moves
	logout  chan struct{} // closed when the Logout Response arrives
	err     error         // why the session ended
	closing chan struct{} // closed by fail: stop everything
	done    chan struct{} // closed once every goroutine stopped and tasks failed
	wg      sync.WaitGroup

	blockSize uint32
	blocks    uint64
}

// Dial connects to cfg.Portal, logs in and reads the LUN's capacity.
func Dial(ctx context.Context, cfg Config) (*Session, error) {
	cfg.defaults()
	lctx, cancel := context.WithTimeout(ctx, cfg.LoginTimeout)
	defer cancel()
	nc, err := cfg.Dial(lctx, "tcp", cfg.Portal)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", cfg.Portal, err)
	}
	s := &Session{cfg: cfg, nc: nc, log: cfg.Logger.With("portal", cfg.Portal, "target", cfg.TargetIQN),
		sendSig: make(chan struct{}, 1), window: make(chan struct{}), logout: make(chan struct{}),
		closing: make(chan struct{}), done: make(chan struct{})}
	s.r = pdu.NewReader(nc, 64<<10)
	s.w = pdu.NewWriter(nc)
	stop := context.AfterFunc(lctx, func() { nc.SetDeadline(time.Now()) })
	eng, err := s.login()
	if !stop() || lctx.Err() != nil {
		nc.Close()
		if err == nil || !errors.As(err, new(*LoginError)) {
			err = fmt.Errorf("login to %s at %s: %w", cfg.TargetIQN, cfg.Portal, context.Cause(lctx))
		}
		return nil, err
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	s.eng = eng
	s.r.Digests.Header, s.w.Digests.Header = s.params.HeaderDigest, s.params.HeaderDigest
	s.r.MaxDataLen = int(s.params.MaxRecvDataSegmentLength)
	s.wg.Add(3)
	go s.reader()
	go s.writer()
	go s.pinger()
	go func() {
		s.wg.Wait()
		s.mu.Lock()
		failed := s.eng.failAll(s.err)
		s.mu.Unlock()
		for _, t := range failed {
			close(t.ch)
		}
		close(s.done)
	}()
	if err := s.readCapacity(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.log.Debug("session up", "tsih", s.params.TSIH, "block_size", s.blockSize, "blocks", s.blocks,
		"header_digest", s.params.HeaderDigest, "max_burst", s.params.MaxBurstLength)
	return s, nil
}

// login runs the login exchange on the connection.
func (s *Session) login() (*engine, error) {
	m := newLoginMachine(s.cfg)
	req := m.start()
	const itt = 0 // the login uses one ITT throughout; it is freed after
	var cmdSN, expStatSN uint32 = 1, 0
	var h pdu.Header
	buf := make([]byte, 8192)
	for {
		data := encodeLoginRequest(&h, req, s.cfg.ISID, itt, cmdSN, expStatSN)
		if err := s.w.WritePDU(&h, data); err != nil {
			return nil, fmt.Errorf("sending login request: %w", err)
		}
		if err := s.r.ReadHeader(&h); err != nil {
			return nil, fmt.Errorf("reading login response: %w", err)
		}
		if h.Opcode() != pdu.OpLoginResp {
			s.r.SkipData()
			return nil, fmt.Errorf("%v during login", h.Opcode())
		}
		d := buf[:h.DataLen()]
		if err := s.r.ReadData(d); err != nil {
			return nil, fmt.Errorf("reading login response data: %w", err)
		}
		expStatSN = h.U32(pdu.OffCmdSN) + 1
		resp := decodeLoginResponse(&h, d)
		next, done, err := m.step(resp)
		if err != nil {
			return nil, err
		}
		if done {
			s.params = m.params
			return newEngine(m.params, s.cfg.LUN, cmdSN, h.U32(pdu.OffExpSN), h.U32(pdu.OffMaxCmdSN), expStatSN), nil
		}
		req = next
	}
}

// fail ends the session for err (the first reason wins) and closes the
// connection, which stops the reader and the writer.
func (s *Session) fail(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	close(s.closing)
	s.mu.Unlock()
	s.nc.Close()
}

// lost wraps a cause as ErrConnectionLost.
func lost(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConnectionLost, fmt.Sprintf(format, args...))
}

func (s *Session) reader() {
	defer s.wg.Done()
	var h pdu.Header
	buf := make([]byte, s.params.MaxRecvDataSegmentLength)
	for {
		if err := s.r.ReadHeader(&h); err != nil {
			s.fail(readErr(err))
			return
		}
		data := buf[:h.DataLen()]
		if err := s.r.ReadData(data); err != nil {
			s.fail(readErr(err))
			return
		}
		s.mu.Lock()
		r, err := s.eng.handle(&h, data)
		if err != nil {
			s.mu.Unlock()
			s.fail(lost("protocol error: %v", err))
			return
		}
		s.queueLocked(r.out...)
		if r.windowMoved {
			close(s.window)
			s.window = make(chan struct{})
		}
		if s.eng.logoutDone {
			select {
			case <-s.logout:
			default:
				close(s.logout)
			}
		}
		s.mu.Unlock()
		for _, t := range r.finished {
			close(t.ch)
		}
	}
}

func readErr(err error) error {
	if errors.Is(err, io.EOF) {
		return lost("the target closed the connection")
	}
	return lost("reading: %v", err)
}

// queueLocked hands PDUs to the writer; s.mu is held.
func (s *Session) queueLocked(out ...outPDU) {
	if len(out) == 0 {
		return
	}
	s.sendq = append(s.sendq, out...)
	select {
	case s.sendSig <- struct{}{}:
	default:
	}
}

// writer sends queued PDUs in order. It is the only goroutine writing the
// connection, so the reader never blocks on a send: a target that blocks
// writing to us while we block writing to it would deadlock both.
func (s *Session) writer() {
	defer s.wg.Done()
	var batch []outPDU
	for {
		select {
		case <-s.closing:
			return
		case <-s.sendSig:
		}
		s.mu.Lock()
		batch, s.sendq = s.sendq, batch[:0]
		s.mu.Unlock()
		for i := range batch {
			if err := s.w.WritePDU(&batch[i].h, batch[i].data); err != nil {
				s.fail(lost("writing: %v", err))
				return
			}
			batch[i] = outPDU{}
		}
	}
}

// pinger sends a NOP-Out every PingInterval and ends the connection when
// one goes unanswered for PingTimeout: a target host that vanished
// without closing the TCP connection must not hold commands for ever.
func (s *Session) pinger() {
	defer s.wg.Done()
	if s.cfg.PingInterval < 0 {
		<-s.closing
		return
	}
	tick := time.NewTicker(min(s.cfg.PingInterval, s.cfg.PingTimeout) / 4)
	defer tick.Stop()
	var sent, last time.Time
	last = time.Now()
	for {
		select {
		case <-s.closing:
			return
		case now := <-tick.C:
			s.mu.Lock()
			outstanding := s.eng.pingITT != 0
			if !outstanding && now.Sub(last) >= s.cfg.PingInterval {
				if p, ok := s.eng.ping(); ok {
					s.queueLocked(p)
					sent, last, outstanding = now, now, true
				}
			}
			s.mu.Unlock()
			if outstanding && now.Sub(sent) > s.cfg.PingTimeout {
				s.log.Warn("target did not answer a NOP-Out ping", "waited", now.Sub(sent).Round(time.Millisecond))
				s.fail(lost("no answer to a NOP-Out ping within %v", s.cfg.PingTimeout))
				return
			}
		}
	}
}

// do runs cmd, repeating it when the target reports a UNIT ATTENTION: it
// is how a target tells of a reset or a changed setting, and like Linux's
// sd we report nothing of it to the block layer.
func (s *Session) do(ctx context.Context, cmd Command) (Response, error) {
	for i := 0; ; i++ {
		r, err := s.Do(ctx, cmd)
		var se *SCSIError
		if i < 4 && errors.As(err, &se) && se.Status == StatusCheckCondition && se.SenseKey == SenseUnitAttention {
			continue
		}
		return r, err
	}
}

// Do runs one SCSI command. A context that ends while the command is at
// the target ends the whole connection: at ErrorRecoveryLevel 0 that is
// the only way to be sure the target no longer moves data for a buffer
// the caller takes back.
func (s *Session) Do(ctx context.Context, cmd Command) (Response, error) {
	if uint64(len(cmd.Data)) > 1<<32-1 {
		return Response{}, fmt.Errorf("%s: %d bytes is more than one command carries", cmd.Op, len(cmd.Data))
	}
	s.mu.Lock()
	for s.err == nil && !s.eng.windowOpen() {
		w := s.window
		s.mu.Unlock()
		select {
		case <-w:
		case <-s.closing:
		case <-ctx.Done():
			return Response{}, fmt.Errorf("%s: waiting for the target's command window: %w", cmd.Op, context.Cause(ctx))
		}
		s.mu.Lock()
	}
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return Response{}, fmt.Errorf("%s: %w", cmd.Op, err)
	}
	t, out := s.eng.start(cmd)
	s.queueLocked(out...)
	s.mu.Unlock()

	select {
	case <-t.ch:
	case <-ctx.Done():
		s.fail(lost("%s abandoned: %v", cmd.Op, context.Cause(ctx)))
		<-t.ch
	}
	return t.resp, t.err
}

// BlockSize is the LUN's logical block length.
func (s *Session) BlockSize() uint32 { return s.blockSize }

// Blocks is the number of logical blocks of the LUN.
func (s *Session) Blocks() uint64 { return s.blocks }

// Params are the negotiated parameters.
func (s *Session) Params() Params { return s.params }

// Done is closed when the session has ended and every command returned.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the session ended (nil while it runs).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Session) readCapacity(ctx context.Context) error {
	buf := make([]byte, 32)
	if _, err := s.do(ctx, readCapacity16(buf)); err != nil {
		return err
	}
	s.blocks = binary.BigEndian.Uint64(buf[0:8]) + 1
	s.blockSize = binary.BigEndian.Uint32(buf[8:12])
	if s.blockSize == 0 || s.blockSize&(s.blockSize-1) != 0 {
		return fmt.Errorf("READ CAPACITY(16): block length %d is not a power of two", s.blockSize)
	}
	return nil
}

// ReadCapacity asks the target for the LUN's size again.
func (s *Session) ReadCapacity(ctx context.Context) (blocks uint64, blockSize uint32, err error) {
	buf := make([]byte, 32)
	if _, err := s.do(ctx, readCapacity16(buf)); err != nil {
		return 0, 0, err
	}
	return binary.BigEndian.Uint64(buf[0:8]) + 1, binary.BigEndian.Uint32(buf[8:12]), nil
}

// TestUnitReady sends TEST UNIT READY.
func (s *Session) TestUnitReady(ctx context.Context) error {
	_, err := s.do(ctx, testUnitReady())
	return err
}

// maxTransfer bounds one READ or WRITE command; longer requests are
// split. It keeps each command under targetd's per-command buffer limit.
const maxTransfer = 4 << 20

// Read reads len(p) bytes (a multiple of the block size) from block lba.
func (s *Session) Read(ctx context.Context, lba uint64, p []byte) error {
	return s.split(lba, p, func(lba uint64, blocks uint32, q []byte) error {
		r, err := s.do(ctx, read16(lba, blocks, q))
		if err == nil && r.N != len(q) {
			err = fmt.Errorf("READ(16) of %d bytes at block %d returned %d", len(q), lba, r.N)
		}
		return err
	})
}

// Write writes p (a multiple of the block size) at block lba; fua asks
// the target to make it durable before answering.
func (s *Session) Write(ctx context.Context, lba uint64, p []byte, fua bool) error {
	return s.split(lba, p, func(lba uint64, blocks uint32, q []byte) error {
		_, err := s.do(ctx, write16(lba, blocks, q, fua))
		return err
	})
}

func (s *Session) split(lba uint64, p []byte, f func(uint64, uint32, []byte) error) error {
	bs := int(s.blockSize)
	if len(p)%bs != 0 {
		return fmt.Errorf("transfer of %d bytes is not a multiple of the %d-byte block", len(p), bs)
	}
	for len(p) > 0 {
		n := min(len(p), maxTransfer)
		if err := f(lba, uint32(n/bs), p[:n]); err != nil {
			return err
		}
		lba += uint64(n / bs)
		p = p[n:]
	}
	return nil
}

// SynchronizeCache sends SYNCHRONIZE CACHE(16) for the whole LUN.
func (s *Session) SynchronizeCache(ctx context.Context) error {
	_, err := s.do(ctx, syncCache16())
	return err
}

// Logout closes the session politely: a Logout Request, its response (or
// ctx's end), then the connection.
func (s *Session) Logout(ctx context.Context) error {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return nil
	}
	s.queueLocked(s.eng.logout())
	s.mu.Unlock()
	var err error
	select {
	case <-s.logout:
	case <-s.closing:
	case <-ctx.Done():
		err = fmt.Errorf("logout from %s: %w", s.cfg.TargetIQN, context.Cause(ctx))
	}
	s.fail(lost("logged out"))
	<-s.done
	return err
}

// Close drops the connection without logging out.
func (s *Session) Close() error {
	s.fail(lost("closed"))
	<-s.done
	return nil
}
