// Package scsi is targetd's SCSI layer: SPC-4, SBC-3 and SPC-3 persistent
// reservations over a BlockDev. It takes a CDB (and Data-Out) and returns
// status, sense and Data-In; it knows nothing of iSCSI or sockets, so it can
// be unit-tested and fuzzed with an in-memory BlockDev.
package scsi

import (
	"context"
	"errors"
)

// BlockDev is the storage behind one logical unit. Implementations must allow
// concurrent calls (pread/pwrite semantics).
type BlockDev interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// Size is the current size in bytes; it may grow while the LU lives
	// (the LU then raises CAPACITY DATA HAS CHANGED when told).
	Size() int64
	// Sync makes every completed write durable (fdatasync).
	Sync() error
	// Discard deallocates [off, off+n); the range reads back as zeroes
	// afterwards if DiscardZeroes reports true.
	Discard(off, n int64) error
	// DiscardZeroes reports whether discarded ranges read back as zeroes
	// (LBPRZ), as punched holes in a file do.
	DiscardZeroes() bool
}

// BlockMapper is an optional interface of a BlockDev that can tell which
// bytes have storage behind them, for GET LBA STATUS on a thin-provisioned
// LU. A BlockDev without it (or a fully provisioned LU) is reported as
// mapped everywhere, which SBC-4 defines as "mapped or unknown": the
// honest answer when the device cannot tell.
type BlockMapper interface {
	// Mapped reports whether the byte at off is mapped (has storage; a
	// deallocated byte reads back as zero when DiscardZeroes is true) and
	// how many bytes from off on, 1 to limit, share that state. off is
	// below Size and limit at least 1.
	Mapped(off, limit int64) (mapped bool, n int64, err error)
}

// Nexus identifies an I_T nexus: one initiator port talking to one target
// port. Persistent reservations, unit attentions and task sets are kept per
// nexus. Two Nexus values with equal fields are the same nexus.
type Nexus struct {
	// InitiatorName is the iSCSI initiator name (lower case).
	InitiatorName string
	// ISID is the initiator session ID, 6 bytes as hex ("0x" + 12 digits).
	ISID string
	// TargetName is the iSCSI target name; TPGT its portal group tag.
	TargetName string
	TPGT       uint16
	// RelativePortID is the relative target port identifier (VPD 0x83).
	RelativePortID uint16
}

// InitiatorPort is the SCSI initiator port name: "<name>,i,0x<isid>".
func (n Nexus) InitiatorPort() string { return n.InitiatorName + ",i," + n.ISID }

// TargetPort is the SCSI target port name: "<name>,t,0x<tpgt as 4 hex digits>".
func (n Nexus) TargetPort() string {
	const hexdig = "0123456789abcdef"
	t := n.TPGT
	return n.TargetName + ",t,0x" + string([]byte{hexdig[t>>12&15], hexdig[t>>8&15], hexdig[t>>4&15], hexdig[t&15]})
}

// TaskAttr is the SAM task attribute of a command.
type TaskAttr uint8

// Task attributes (iSCSI SCSI Command PDU ATTR field values).
const (
	Untagged    TaskAttr = 0
	Simple      TaskAttr = 1
	Ordered     TaskAttr = 2
	HeadOfQueue TaskAttr = 3
	ACA         TaskAttr = 4
)

// Command is one SCSI command as the transport hands it over.
type Command struct {
	Nexus Nexus
	LUN   uint64 // the LUN as a flat number (SAM-5 single-level, 0..16383)
	Tag   uint32 // the transport's task tag (iSCSI ITT), unique per nexus while in flight
	Attr  TaskAttr
	CDB   []byte
	// Data is all the Data-Out the initiator sent: exactly the expected
	// data transfer length of the transport (may differ from what the CDB
	// asks for). The layer never writes more or other bytes than the CDB
	// says: extra Data is ignored. When Data is shorter than the CDB's
	// transfer it writes only the whole logical blocks that arrived and
	// returns GOOD (libiscsi's iSCSIResiduals suite requires this; the
	// transport reports the residual overflow), or, with
	// TargetOptions.StrictDataOut, writes nothing and returns CHECK
	// CONDITION. COMPARE AND WRITE and WRITE SAME, whose Data-Out size is
	// fixed, fail without writing on any mismatch.
	Data []byte
	// ExpectedLen is the transport's expected data transfer length (for
	// reads, the most Data-In the initiator will take).
	ExpectedLen uint32
	// Read and Write are the transport's direction bits.
	Read, Write bool
}

// Result is the outcome of a command.
type Result struct {
	Status Status
	// Sense is fixed-format sense data (SPC-4 4.5.3), set with CHECK CONDITION.
	Sense []byte
	// Data is the Data-In; the transport sends at most ExpectedLen of it
	// and reports the rest as residual overflow.
	Data []byte
	// TransferLen is how many bytes the CDB asked to move (Data-In or
	// Data-Out), for the transport's residual counts.
	//
	// Precisely: for READ-class commands and every Data-Out command it is
	// the CDB's transfer length in bytes, set even with CHECK CONDITION
	// once the CDB could be decoded; for commands that return at most an
	// ALLOCATION LENGTH of data (INQUIRY, MODE SENSE, REPORT LUNS, ...) it
	// is len(Data), already capped by the allocation length. The transport
	// reports residual overflow TransferLen-ExpectedLen when TransferLen is
	// larger than its expected data transfer length, and residual
	// underflow ExpectedLen-TransferLen when it is smaller.
	TransferLen uint32

	// pooled is the BufPool handle of Data, returned by Target.Release.
	pooled *[]byte
}

// Status is a SAM status byte.
type Status uint8

// SAM-5 status codes.
const (
	StatusGood                Status = 0x00
	StatusCheckCondition      Status = 0x02
	StatusConditionMet        Status = 0x04
	StatusBusy                Status = 0x08
	StatusReservationConflict Status = 0x18
	StatusTaskSetFull         Status = 0x28
	StatusACAActive           Status = 0x30
	StatusTaskAborted         Status = 0x40
)

// ErrAborted is returned by Execute for a task aborted by a task management
// function, a reset or PREEMPT AND ABORT: the transport sends no status.
var ErrAborted = errors.New("scsi: task aborted")

// Executor is what the transport calls: a target's set of LUs.
type Executor interface {
	// Execute runs cmd. It returns ErrAborted (and no result) when the task
	// was aborted while it ran or when ctx was cancelled.
	Execute(ctx context.Context, cmd *Command) (Result, error)
}
