// Package nbd is an NBD server (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md):
// fixed newstyle negotiation (EXPORT_NAME, GO, INFO, LIST, ABORT; structured
// replies and metadata contexts are refused, so simple replies are used)
// and the transmission phase (READ, WRITE with FUA, FLUSH, TRIM as a no-op,
// WRITE_ZEROES, DISC). Requests of one connection run concurrently; their
// replies are serialised. It serves a Backend, for mhcodi-bridge the
// remote leg of a guest disk reached over iSCSI, to QEMU's NBD client,
// which unlike QEMU's iSCSI client never blocks the guest while the
// storage is away.
//
// The wire format lives in this file as pure encode/decode functions; the
// connection handling in server.go.
package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Magic numbers.
const (
	magicInit      = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt       = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply  = 0x0003e889045565a9
	magicRequest   = 0x25609513
	magicSimpleRep = 0x67446698
)

// Handshake flags.
const (
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1
	clientFlagsKnown  = flagFixedNewstyle | flagNoZeroes
)

// Options.
const (
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
)

// Option reply types.
const (
	repAck        = 1
	repServer     = 2
	repInfo       = 3
	repErrUnsup   = 1<<31 + 1
	repErrPolicy  = 1<<31 + 2
	repErrInvalid = 1<<31 + 3
	repErrUnknown = 1<<31 + 6
	repErrTooBig  = 1<<31 + 9
)

// Info types of NBD_OPT_INFO / NBD_OPT_GO.
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Transmission flags.
const (
	tflagHasFlags        = 1 << 0
	tflagSendFlush       = 1 << 2
	tflagSendFUA         = 1 << 3
	tflagSendTrim        = 1 << 5
	tflagSendWriteZeroes = 1 << 6
)

// Command types.
const (
	CmdRead        = 0
	CmdWrite       = 1
	CmdDisc        = 2
	CmdFlush       = 3
	CmdTrim        = 4
	CmdWriteZeroes = 6
)

// Command flags.
const (
	CmdFlagFUA    = 1 << 0
	CmdFlagNoHole = 1 << 1
)

// Errno is an NBD error value, as sent in a reply. A Backend may return
// one (or wrap one) to choose the error the client sees; any other error
// is reported as EIO.
type Errno uint32

// Error values of the protocol.
const (
	EPERM     Errno = 1
	EIO       Errno = 5
	ENOMEM    Errno = 12
	EINVAL    Errno = 22
	ENOSPC    Errno = 28
	EOVERFLOW Errno = 75
	ENOTSUP   Errno = 95
	ESHUTDOWN Errno = 108
)

func (e Errno) Error() string {
	switch e {
	case EPERM:
		return "nbd: EPERM"
	case EIO:
		return "nbd: EIO"
	case ENOMEM:
		return "nbd: ENOMEM"
	case EINVAL:
		return "nbd: EINVAL"
	case ENOSPC:
		return "nbd: ENOSPC"
	case EOVERFLOW:
		return "nbd: EOVERFLOW"
	case ENOTSUP:
		return "nbd: ENOTSUP"
	case ESHUTDOWN:
		return "nbd: ESHUTDOWN"
	}
	return fmt.Sprintf("nbd: errno %d", uint32(e))
}

// ErrnoOf is the error value sent for err: the Errno it wraps, else EIO.
func ErrnoOf(err error) Errno {
	if err == nil {
		return 0
	}
	var e Errno
	if errors.As(err, &e) {
		return e
	}
	return EIO
}

// RequestLen is the size of a request header.
const RequestLen = 28

// MaxPayload is the longest READ or WRITE accepted, QEMU's own limit and
// the maximum block size we advertise.
const MaxPayload = 32 << 20

// Request is one transmission request header.
type Request struct {
	Flags  uint16
	Type   uint16
	Handle uint64
	Offset uint64
	Length uint32
}

// ErrBadMagic is a request header without the request magic: the stream
// is out of step and the connection must be closed.
var ErrBadMagic = errors.New("nbd: bad request magic")

// DecodeRequest decodes a request header.
func DecodeRequest(b []byte) (Request, error) {
	if len(b) < RequestLen {
		return Request{}, fmt.Errorf("nbd: request header of %d bytes", len(b))
	}
	if binary.BigEndian.Uint32(b[0:4]) != magicRequest {
		return Request{}, ErrBadMagic
	}
	return Request{
		Flags:  binary.BigEndian.Uint16(b[4:6]),
		Type:   binary.BigEndian.Uint16(b[6:8]),
		Handle: binary.BigEndian.Uint64(b[8:16]),
		Offset: binary.BigEndian.Uint64(b[16:24]),
		Length: binary.BigEndian.Uint32(b[24:28]),
	}, nil
}

// EncodeRequest is the inverse of DecodeRequest (for clients and tests).
func EncodeRequest(r Request) []byte {
	b := make([]byte, RequestLen)
	binary.BigEndian.PutUint32(b[0:4], magicRequest)
	binary.BigEndian.PutUint16(b[4:6], r.Flags)
	binary.BigEndian.PutUint16(b[6:8], r.Type)
	binary.BigEndian.PutUint64(b[8:16], r.Handle)
	binary.BigEndian.PutUint64(b[16:24], r.Offset)
	binary.BigEndian.PutUint32(b[24:28], r.Length)
	return b
}

// PayloadLen is how many data bytes follow the header on the wire: only
// WRITE carries any.
func (r Request) PayloadLen() int {
	if r.Type == CmdWrite {
		return int(r.Length)
	}
	return 0
}

// Check validates a request against an export of size bytes: the error
// value to reply with, or 0. fatal says the stream cannot be followed any
// further (a WRITE whose payload is too long to read and drop safely).
func (r Request) Check(size uint64) (errno Errno, fatal bool) {
	known := uint16(CmdFlagFUA | CmdFlagNoHole)
	if r.Flags&^known != 0 {
		return EINVAL, false
	}
	end := r.Offset + uint64(r.Length)
	overflow := end < r.Offset
	switch r.Type {
	case CmdRead:
		if r.Length > MaxPayload {
			return EOVERFLOW, false
		}
		if overflow || end > size {
			return EINVAL, false
		}
	case CmdWrite:
		if r.Length > MaxPayload {
			return EOVERFLOW, true
		}
		if overflow || end > size {
			return ENOSPC, false
		}
	case CmdTrim, CmdWriteZeroes:
		if overflow || end > size {
			return ENOSPC, false
		}
	case CmdFlush, CmdDisc:
	default:
		return EINVAL, false
	}
	return 0, false
}

// simpleReply is the 16-byte header of a simple reply.
func simpleReply(handle uint64, errno Errno) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint32(b[0:4], magicSimpleRep)
	binary.BigEndian.PutUint32(b[4:8], uint32(errno))
	binary.BigEndian.PutUint64(b[8:16], handle)
	return b
}

// optionReply encodes an option reply.
func optionReply(opt, typ uint32, data []byte) []byte {
	b := make([]byte, 20, 20+len(data))
	binary.BigEndian.PutUint64(b[0:8], magicOptReply)
	binary.BigEndian.PutUint32(b[8:12], opt)
	binary.BigEndian.PutUint32(b[12:16], typ)
	binary.BigEndian.PutUint32(b[16:20], uint32(len(data)))
	return append(b, data...)
}

// goRequest is the data of NBD_OPT_INFO / NBD_OPT_GO.
type goRequest struct {
	name  string
	infos []uint16
}

func parseGo(data []byte) (goRequest, error) {
	if len(data) < 6 {
		return goRequest{}, errors.New("option data shorter than 6 bytes")
	}
	n := binary.BigEndian.Uint32(data[0:4])
	if uint64(n) > uint64(len(data)-6) {
		return goRequest{}, fmt.Errorf("export name length %d exceeds the option data", n)
	}
	g := goRequest{name: string(data[4 : 4+n])}
	rest := data[4+n:]
	k := int(binary.BigEndian.Uint16(rest[0:2]))
	rest = rest[2:]
	if len(rest) != 2*k {
		return goRequest{}, fmt.Errorf("%d information requests announced, %d bytes follow", k, len(rest))
	}
	for i := range k {
		g.infos = append(g.infos, binary.BigEndian.Uint16(rest[2*i:]))
	}
	return g, nil
}

func infoExportData(size uint64, flags uint16) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b[0:2], infoExport)
	binary.BigEndian.PutUint64(b[2:10], size)
	binary.BigEndian.PutUint16(b[10:12], flags)
	return b
}

func infoBlockSizeData(minimum, preferred, maximum uint32) []byte {
	b := make([]byte, 14)
	binary.BigEndian.PutUint16(b[0:2], infoBlockSize)
	binary.BigEndian.PutUint32(b[2:6], minimum)
	binary.BigEndian.PutUint32(b[6:10], preferred)
	binary.BigEndian.PutUint32(b[10:14], maximum)
	return b
}

func infoStringData(typ uint16, s string) []byte {
	b := make([]byte, 2, 2+len(s))
	binary.BigEndian.PutUint16(b, typ)
	return append(b, s...)
}
