package iscsiclient

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// SCSI status codes (SAM-5 §5.3).
const (
	StatusGood                = 0x00
	StatusCheckCondition      = 0x02
	StatusBusy                = 0x08
	StatusReservationConflict = 0x18
	StatusTaskSetFull         = 0x28
)

// Sense keys the callers care about (SPC-4 §4.5.6).
const (
	SenseNotReady       = 0x02
	SenseMediumError    = 0x03
	SenseHardwareError  = 0x04
	SenseIllegalRequest = 0x05
	SenseUnitAttention  = 0x06
	SenseDataProtect    = 0x07
	SenseAbortedCommand = 0x0b
)

// ErrConnectionLost is matched (errors.Is) by the error of every command
// that was outstanding when its connection died, and of every command
// started on a finished session. At ErrorRecoveryLevel 0 the target drops
// such tasks, so the command may or may not have taken effect; a block
// READ or WRITE can safely be repeated on a new session.
var ErrConnectionLost = errors.New("iscsi connection lost")

// SCSIError is a command the target completed with a status other than
// GOOD. For CHECK CONDITION the sense key and additional sense code are
// decoded from the sense data.
type SCSIError struct {
	Op        string // the command, for messages ("READ(16)")
	Status    byte
	SenseKey  byte
	ASC, ASCQ byte
	Sense     []byte
}

func (e *SCSIError) Error() string {
	if e.Status == StatusCheckCondition {
		return fmt.Sprintf("%s: CHECK CONDITION, sense key 0x%x, ASC/ASCQ 0x%02x/0x%02x", e.Op, e.SenseKey, e.ASC, e.ASCQ)
	}
	return fmt.Sprintf("%s: SCSI status 0x%02x", e.Op, e.Status)
}

// ResponseError is a SCSI Response whose iSCSI response code says the
// target could not run the command at all (RFC 7143 §11.4.3).
type ResponseError struct {
	Op       string
	Response byte
}

func (e *ResponseError) Error() string {
	return fmt.Sprintf("%s: target failure, iSCSI response 0x%02x", e.Op, e.Response)
}

// RejectError is a command the target answered with a Reject PDU.
type RejectError struct {
	Op     string
	Reason byte
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("%s: rejected by the target, reason 0x%02x", e.Op, e.Reason)
}

// parseSense decodes fixed (0x70/0x71) and descriptor (0x72/0x73) sense
// data (SPC-4 §4.5) into e; short or unknown formats leave the fields 0.
func (e *SCSIError) parseSense(sense []byte) {
	e.Sense = sense
	if len(sense) < 1 {
		return
	}
	switch sense[0] & 0x7f {
	case 0x70, 0x71:
		if len(sense) > 2 {
			e.SenseKey = sense[2] & 0x0f
		}
		if len(sense) > 13 {
			e.ASC, e.ASCQ = sense[12], sense[13]
		}
	case 0x72, 0x73:
		if len(sense) > 3 {
			e.SenseKey, e.ASC, e.ASCQ = sense[1]&0x0f, sense[2], sense[3]
		}
	}
}

// Command is one SCSI command for Session.Do.
type Command struct {
	// Op names the command in errors.
	Op  string
	CDB [16]byte
	// Read: the target sends up to len(Data) bytes into Data. Write: Data
	// is sent. Neither: no data phase.
	Read, Write bool
	Data        []byte
}

// Response is what a command returned.
type Response struct {
	// N is how many bytes of Data the target sent (reads).
	N int
	// Residual is the residual count the target reported.
	Residual uint32
}

func read16(lba uint64, blocks uint32, p []byte) Command {
	c := Command{Op: "READ(16)", Read: true, Data: p}
	c.CDB[0] = 0x88
	binary.BigEndian.PutUint64(c.CDB[2:10], lba)
	binary.BigEndian.PutUint32(c.CDB[10:14], blocks)
	return c
}

func write16(lba uint64, blocks uint32, p []byte, fua bool) Command {
	c := Command{Op: "WRITE(16)", Write: true, Data: p}
	c.CDB[0] = 0x8a
	if fua {
		c.CDB[1] = 0x08
	}
	binary.BigEndian.PutUint64(c.CDB[2:10], lba)
	binary.BigEndian.PutUint32(c.CDB[10:14], blocks)
	return c
}

func syncCache16() Command {
	c := Command{Op: "SYNCHRONIZE CACHE(16)"}
	c.CDB[0] = 0x91
	return c
}

func readCapacity16(p []byte) Command {
	c := Command{Op: "READ CAPACITY(16)", Read: true, Data: p}
	c.CDB[0] = 0x9e
	c.CDB[1] = 0x10 // SERVICE ACTION: READ CAPACITY(16)
	binary.BigEndian.PutUint32(c.CDB[10:14], uint32(len(p)))
	return c
}

func testUnitReady() Command {
	return Command{Op: "TEST UNIT READY"}
}
