package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Backend is the block device an export serves. Its methods are called
// concurrently; offsets and lengths were checked against Size. Errors
// become EIO unless they wrap an Errno.
type Backend interface {
	ReadAt(ctx context.Context, p []byte, off int64) error
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	Flush(ctx context.Context) error
	Size() int64
}

// BlockSizer is an optional Backend interface: the smallest I/O unit,
// advertised as NBD_INFO_BLOCK_SIZE so clients align their requests.
type BlockSizer interface {
	BlockSize() uint32
}

// Server serves one export.
type Server struct {
	// Name is the export name; the empty (default) name is accepted too.
	Name        string
	Description string
	Backend     Backend
	Log         *slog.Logger
	// MaxInflight bounds the requests of one connection running at once
	// (default 64); the reader stops reading while it is reached.
	MaxInflight int
	// NegotiationTimeout bounds the handshake (default 30 s).
	NegotiationTimeout time.Duration

	mu     sync.Mutex
	lns    map[net.Listener]bool
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("nbd: server closed")

// Serve accepts connections on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	if s.lns == nil {
		s.lns, s.conns = map[net.Listener]bool{}, map[net.Conn]bool{}
	}
	s.lns[ln] = true
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("nbd: accepting: %w", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return ErrServerClosed
		}
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			err := s.ServeConn(c)
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log().Warn("nbd connection ended", "err", err)
			}
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops the listeners and connections and waits for their
// handlers to return.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Conn is what ServeConn needs of a connection.
type Conn interface {
	io.ReadWriteCloser
	SetDeadline(time.Time) error
}

// ServeConn runs one client connection to its end.
func (s *Server) ServeConn(c Conn) error {
	defer c.Close()
	timeout := s.NegotiationTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	c.SetDeadline(time.Now().Add(timeout))
	ok, err := s.negotiate(c)
	if err != nil || !ok {
		return err
	}
	c.SetDeadline(time.Time{})
	return s.transmit(c)
}

// transmissionFlags are the export's flags.
const transmissionFlags = tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagSendWriteZeroes

// maxOptionLen bounds the data of one option we read (export names are
// at most 4096 bytes; nothing we support needs more).
const maxOptionLen = 64 << 10

// negotiate runs the fixed newstyle handshake; ok means transmission
// starts.
func (s *Server) negotiate(c Conn) (ok bool, err error) {
	hello := make([]byte, 18)
	binary.BigEndian.PutUint64(hello[0:8], magicInit)
	binary.BigEndian.PutUint64(hello[8:16], magicOpt)
	binary.BigEndian.PutUint16(hello[16:18], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.Write(hello); err != nil {
		return false, fmt.Errorf("nbd: sending the greeting: %w", err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(c, cf[:]); err != nil {
		return false, fmt.Errorf("nbd: reading client flags: %w", err)
	}
	clientFlags := binary.BigEndian.Uint32(cf[:])
	if clientFlags&flagFixedNewstyle == 0 || clientFlags&^clientFlagsKnown != 0 {
		// §"Client flags": unknown flags or plain newstyle: disconnect.
		return false, fmt.Errorf("nbd: client flags 0x%x not supported", clientFlags)
	}
	noZeroes := clientFlags&flagNoZeroes != 0
	size := uint64(s.Backend.Size())
	var hdr [16]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return false, fmt.Errorf("nbd: reading an option: %w", err)
		}
		if binary.BigEndian.Uint64(hdr[0:8]) != magicOpt {
			return false, errors.New("nbd: option without IHAVEOPT magic")
		}
		opt := binary.BigEndian.Uint32(hdr[8:12])
		n := binary.BigEndian.Uint32(hdr[12:16])
		if n > maxOptionLen {
			// Drain it so the stream stays in step, then refuse it.
			if _, err := io.CopyN(io.Discard, c, int64(n)); err != nil {
				return false, fmt.Errorf("nbd: reading option data: %w", err)
			}
			if err := s.reply(c, opt, repErrTooBig, nil); err != nil {
				return false, err
			}
			continue
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c, data); err != nil {
			return false, fmt.Errorf("nbd: reading option data: %w", err)
		}
		switch opt {
		case optExportName:
			if !s.known(string(data)) {
				// No way to refuse EXPORT_NAME but to hang up.
				return false, fmt.Errorf("nbd: unknown export %q", data)
			}
			b := make([]byte, 10, 134)
			binary.BigEndian.PutUint64(b[0:8], size)
			binary.BigEndian.PutUint16(b[8:10], transmissionFlags)
			if !noZeroes {
				b = b[:134]
			}
			if _, err := c.Write(b); err != nil {
				return false, fmt.Errorf("nbd: sending export data: %w", err)
			}
			return true, nil
		case optAbort:
			s.reply(c, opt, repAck, nil) // best effort: the client may have gone
			return false, nil
		case optList:
			if n != 0 {
				err = s.reply(c, opt, repErrInvalid, nil)
				break
			}
			d := binary.BigEndian.AppendUint32(nil, uint32(len(s.Name)))
			if err = s.reply(c, opt, repServer, append(d, s.Name...)); err == nil {
				err = s.reply(c, opt, repAck, nil)
			}
		case optInfo, optGo:
			var g goRequest
			g, err = parseGo(data)
			switch {
			case err != nil:
				err = s.reply(c, opt, repErrInvalid, []byte(err.Error()))
			case !s.known(g.name):
				err = s.reply(c, opt, repErrUnknown, []byte("no such export"))
			default:
				if err = s.sendInfo(c, opt, g, size); err == nil && opt == optGo {
					return true, nil
				}
			}
		default:
			// STARTTLS, STRUCTURED_REPLY, metadata contexts, extended
			// headers: unsupported, so the client falls back to simple
			// replies.
			err = s.reply(c, opt, repErrUnsup, nil)
		}
		if err != nil {
			return false, err
		}
	}
}

func (s *Server) known(name string) bool { return name == "" || name == s.Name }

func (s *Server) sendInfo(c Conn, opt uint32, g goRequest, size uint64) error {
	if err := s.reply(c, opt, repInfo, infoExportData(size, transmissionFlags)); err != nil {
		return err
	}
	for _, i := range g.infos {
		var d []byte
		switch i {
		case infoName:
			d = infoStringData(infoName, s.Name)
		case infoDescription:
			if s.Description != "" {
				d = infoStringData(infoDescription, s.Description)
			}
		case infoBlockSize:
			bs := uint32(1)
			if b, ok := s.Backend.(BlockSizer); ok && b.BlockSize() > 0 {
				bs = b.BlockSize()
			}
			d = infoBlockSizeData(bs, max(bs, 4096), MaxPayload)
		}
		if d != nil {
			if err := s.reply(c, opt, repInfo, d); err != nil {
				return err
			}
		}
	}
	return s.reply(c, opt, repAck, nil)
}

func (s *Server) reply(c Conn, opt, typ uint32, data []byte) error {
	if _, err := c.Write(optionReply(opt, typ, data)); err != nil {
		return fmt.Errorf("nbd: sending an option reply: %w", err)
	}
	return nil
}

// transmit reads requests and runs them concurrently; replies go out
// whole, one at a time.
func (s *Server) transmit(c Conn) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	maxIn := s.MaxInflight
	if maxIn <= 0 {
		maxIn = 64
	}
	sem := make(chan struct{}, maxIn)
	var wmu sync.Mutex
	var wg sync.WaitGroup
	var werr error
	send := func(bufs ...[]byte) {
		wmu.Lock()
		defer wmu.Unlock()
		if werr != nil {
			return
		}
		nb := net.Buffers(bufs)
		if _, err := nb.WriteTo(c); err != nil {
			werr = err
			c.Close() // the reader stops too
		}
	}
	size := uint64(s.Backend.Size())
	var hdr [RequestLen]byte
	var err error
	for {
		if _, err = io.ReadFull(c, hdr[:]); err != nil {
			break
		}
		var req Request
		if req, err = DecodeRequest(hdr[:]); err != nil {
			break
		}
		if req.Type == CmdDisc {
			err = nil
			break
		}
		errno, fatal := req.Check(size)
		if fatal {
			err = fmt.Errorf("nbd: %d-byte write exceeds %d: dropping the connection", req.Length, MaxPayload)
			break
		}
		var payload []byte
		if n := req.PayloadLen(); n > 0 {
			payload = make([]byte, n)
			if _, err = io.ReadFull(c, payload); err != nil {
				break
			}
		}
		if errno != 0 {
			send(simpleReply(req.Handle, errno))
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			data, errno := s.run(ctx, req, payload)
			if errno != 0 {
				send(simpleReply(req.Handle, errno))
				return
			}
			send(simpleReply(req.Handle, 0), data)
		}()
	}
	// On DISC the requests already received still get their replies
	// before the connection closes; on a broken stream the same wait
	// keeps the backend's buffers from being used after we return.
	wg.Wait()
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// zeroChunk bounds one write of WRITE_ZEROES.
const zeroChunk = 1 << 20

// run executes one checked request.
func (s *Server) run(ctx context.Context, req Request, payload []byte) ([]byte, Errno) {
	off := int64(req.Offset)
	b := s.Backend
	var err error
	switch req.Type {
	case CmdRead:
		data := make([]byte, req.Length)
		if err = b.ReadAt(ctx, data, off); err == nil {
			return data, 0
		}
	case CmdWrite:
		err = b.WriteAt(ctx, payload, off, req.Flags&CmdFlagFUA != 0)
	case CmdFlush:
		err = b.Flush(ctx)
	case CmdTrim:
		// TRIM is advisory (the spec lets a server ignore it); a mirror
		// leg keeps its blocks.
	case CmdWriteZeroes:
		zero := make([]byte, min(int64(req.Length), zeroChunk))
		for done := int64(0); done < int64(req.Length) && err == nil; {
			n := min(int64(req.Length)-done, zeroChunk)
			err = b.WriteAt(ctx, zero[:n], off+done, req.Flags&CmdFlagFUA != 0)
			done += n
		}
	}
	if err != nil {
		e := ErrnoOf(err)
		s.log().Debug("nbd request failed", "type", req.Type, "offset", req.Offset, "length", req.Length, "errno", uint32(e), "err", err)
		return nil, e
	}
	return nil, 0
}
