package pdu

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// Errors a Reader returns. After any of them the stream cannot be trusted:
// the connection is dropped (after a Reject where RFC 7143 asks for one).
var (
	ErrHeaderDigest = errors.New("pdu: header digest mismatch")
	ErrDataDigest   = errors.New("pdu: data digest mismatch")
	ErrDataTooLong  = errors.New("pdu: data segment longer than MaxRecvDataSegmentLength")
)

// Digests says which CRC32C digests a connection negotiated.
type Digests struct {
	Header, Data bool
}

// Reader reads PDUs from a stream. The header and the data are read in two
// steps so the caller can put the data straight where it belongs (a write
// command's buffer at its offset) without a copy.
type Reader struct {
	br      *bufio.Reader
	Digests Digests
	// MaxDataLen is the longest data segment accepted: the
	// MaxRecvDataSegmentLength this side declared (8192 during login).
	MaxDataLen int
	ahs        []byte
	pending    *Header // header whose data has not been read yet
	crcBuf     [4]byte
	pad        [4]byte
}

// NewReader reads PDUs from r with a read buffer of bufSize bytes.
func NewReader(r io.Reader, bufSize int) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, bufSize), MaxDataLen: 8192}
}

// ReadHeader reads the next basic header segment into h, with its AHS (see
// AHS) and header digest. The caller must then call ReadData or SkipData.
func (r *Reader) ReadHeader(h *Header) error {
	if r.pending != nil {
		return errors.New("pdu: ReadHeader before the previous PDU's data was read")
	}
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return err
	}
	// The length check comes before the AHS is read, so a garbage header
	// is refused at once instead of waiting for bytes that never come.
	if h.DataLen() > r.MaxDataLen {
		return fmt.Errorf("%w: %v carries %d bytes, the limit is %d", ErrDataTooLong, h.Opcode(), h.DataLen(), r.MaxDataLen)
	}
	crc := uint32(0)
	if r.Digests.Header {
		crc = Digest(h[:])
	}
	r.ahs = r.ahs[:0]
	if n := h.AHSLen(); n > 0 {
		if cap(r.ahs) < n {
			r.ahs = make([]byte, n)
		}
		r.ahs = r.ahs[:n]
		if _, err := io.ReadFull(r.br, r.ahs); err != nil {
			return fmt.Errorf("pdu: reading %d bytes of AHS: %w", n, noEOF(err))
		}
		if r.Digests.Header {
			crc = digestUpdate(crc, r.ahs)
		}
	}
	if r.Digests.Header {
		if _, err := io.ReadFull(r.br, r.crcBuf[:]); err != nil {
			return fmt.Errorf("pdu: reading header digest: %w", noEOF(err))
		}
		if binary.LittleEndian.Uint32(r.crcBuf[:]) != crc {
			return ErrHeaderDigest
		}
	}
	r.pending = h
	return nil
}

// Buffered is how many bytes of the stream are read ahead: a caller that
// has work queued can tell whether the next ReadHeader would wait for the
// network (and flush first).
func (r *Reader) Buffered() int { return r.br.Buffered() }

// AHS returns the additional header segments of the last header read; valid
// until the next ReadHeader.
func (r *Reader) AHS() []byte { return r.ahs }

// ReadData reads the pending PDU's data segment into dst, which must be
// exactly DataLen bytes, with its padding and data digest.
func (r *Reader) ReadData(dst []byte) error {
	h := r.pending
	if h == nil {
		return errors.New("pdu: ReadData without a header")
	}
	r.pending = nil
	n := h.DataLen()
	if len(dst) != n {
		return fmt.Errorf("pdu: ReadData into %d bytes, the PDU carries %d", len(dst), n)
	}
	if n == 0 {
		return nil
	}
	if _, err := io.ReadFull(r.br, dst); err != nil {
		return fmt.Errorf("pdu: reading %d data bytes: %w", n, noEOF(err))
	}
	pad := r.pad[:Padding(n)]
	if _, err := io.ReadFull(r.br, pad); err != nil {
		return fmt.Errorf("pdu: reading padding: %w", noEOF(err))
	}
	if r.Digests.Data {
		if _, err := io.ReadFull(r.br, r.crcBuf[:]); err != nil {
			return fmt.Errorf("pdu: reading data digest: %w", noEOF(err))
		}
		crc := digestUpdate(Digest(dst), pad)
		if binary.LittleEndian.Uint32(r.crcBuf[:]) != crc {
			return ErrDataDigest
		}
	}
	return nil
}

// SkipData reads and discards the pending PDU's data segment, still checking
// its digest (a PDU whose data is corrupt must not be acted on).
func (r *Reader) SkipData() error {
	h := r.pending
	if h == nil {
		return errors.New("pdu: SkipData without a header")
	}
	n := h.DataLen()
	if n == 0 {
		r.pending = nil
		return nil
	}
	buf := make([]byte, n)
	return r.ReadData(buf)
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// PDU is one whole PDU, as Decode returns it.
type PDU struct {
	Header Header
	AHS    []byte
	Data   []byte
}

// Decode reads one PDU from the start of b, for tests and fuzzing; it
// returns the PDU and how many bytes it took.
func Decode(b []byte, d Digests, maxData int) (*PDU, int, error) {
	cr := &countReader{b: b}
	r := NewReader(cr, 16)
	r.Digests, r.MaxDataLen = d, maxData
	p := &PDU{}
	if err := r.ReadHeader(&p.Header); err != nil {
		return nil, 0, err
	}
	p.AHS = append([]byte(nil), r.AHS()...)
	p.Data = make([]byte, p.Header.DataLen())
	if err := r.ReadData(p.Data); err != nil {
		return nil, 0, err
	}
	return p, cr.n - r.br.Buffered(), nil
}

type countReader struct {
	b []byte
	n int
}

func (c *countReader) Read(p []byte) (int, error) {
	if c.n >= len(c.b) {
		return 0, io.EOF
	}
	n := copy(p, c.b[c.n:])
	c.n += n
	return n, nil
}

// Writer writes PDUs. It is not safe for concurrent use: a connection has one
// writer goroutine (or a mutex around it).
type Writer struct {
	w       io.Writer
	Digests Digests
	hbuf    [BHSLen + 4]byte
	tail    [8]byte
	bufs    net.Buffers

	// The batch of Queue: headers and tails live in arena, the iovecs in
	// batch; queued counts the bytes.
	arena  []byte
	batch  net.Buffers
	queued int
}

// NewWriter writes PDUs to w; with a net.Conn the header, data and digests
// go out in one writev.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WritePDU writes h (with its DataLen set from data) and data, with padding
// and the negotiated digests. It carries no AHS: targets send none.
func (w *Writer) WritePDU(h *Header, data []byte) error {
	h[4] = 0
	h.SetDataLen(len(data))
	copy(w.hbuf[:], h[:])
	hdr := w.hbuf[:BHSLen]
	if w.Digests.Header {
		binary.LittleEndian.PutUint32(w.hbuf[BHSLen:], Digest(h[:]))
		hdr = w.hbuf[:BHSLen+4]
	}
	w.bufs = append(w.bufs[:0], hdr)
	if len(data) > 0 {
		w.bufs = append(w.bufs, data)
		pad := Padding(len(data))
		var zeros [4]byte
		tail := append(w.tail[:0], zeros[:pad]...)
		if w.Digests.Data {
			crc := digestUpdate(Digest(data), zeros[:pad])
			tail = binary.LittleEndian.AppendUint32(tail, crc)
		}
		if len(tail) > 0 {
			w.bufs = append(w.bufs, tail)
		}
	}
	bufs := w.bufs
	_, err := bufs.WriteTo(w.w)
	return err
}

// Queue adds a PDU to the batch Flush writes, encoded as WritePDU would;
// data must not change until then. A batch of several PDUs goes out in one
// writev.
func (w *Writer) Queue(h *Header, data []byte) {
	h[4] = 0
	h.SetDataLen(len(data))
	// Slices into an arena that append moves keep pointing at the old
	// array, whose bytes stay as they were written: no copy is lost.
	start := len(w.arena)
	w.arena = append(w.arena, h[:]...)
	if w.Digests.Header {
		w.arena = binary.LittleEndian.AppendUint32(w.arena, Digest(h[:]))
	}
	w.batch = append(w.batch, w.arena[start:len(w.arena):len(w.arena)])
	w.queued += len(w.arena) - start
	if len(data) == 0 {
		return
	}
	w.batch = append(w.batch, data)
	var zeros [4]byte
	pad := Padding(len(data))
	start = len(w.arena)
	w.arena = append(w.arena, zeros[:pad]...)
	if w.Digests.Data {
		w.arena = binary.LittleEndian.AppendUint32(w.arena, digestUpdate(Digest(data), zeros[:pad]))
	}
	if len(w.arena) > start {
		w.batch = append(w.batch, w.arena[start:len(w.arena):len(w.arena)])
	}
	w.queued += len(data) + len(w.arena) - start
}

// Queued is how many bytes Queue holds for Flush.
func (w *Writer) Queued() int { return w.queued }

// Flush writes the queued PDUs (with a net.Conn: one writev, or as few as
// the iovec limit allows) and empties the batch, also when the write fails.
func (w *Writer) Flush() error {
	if len(w.batch) == 0 {
		return nil
	}
	bufs := w.batch
	_, err := bufs.WriteTo(w.w)
	clear(w.batch) // drop the references to the callers' data
	w.batch = w.batch[:0]
	w.arena = w.arena[:0]
	w.queued = 0
	return err
}
