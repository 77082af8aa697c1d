// Package pdu encodes and decodes iSCSI PDUs (RFC 7143 §11): the 48-byte
// basic header segment with typed accessors, additional header segments,
// padding and CRC32C digests. It does no I/O beyond the io.Reader/io.Writer
// it is handed, keeps no state, and decoding never trusts a length field
// further than the limits it is given.
package pdu

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
)

// BHSLen is the size of the basic header segment.
const BHSLen = 48

// Opcode is a PDU opcode (the low six bits of byte 0).
type Opcode uint8

// Initiator opcodes.
const (
	OpNOPOut      Opcode = 0x00
	OpSCSICmd     Opcode = 0x01
	OpTaskMgmtReq Opcode = 0x02
	OpLoginReq    Opcode = 0x03
	OpTextReq     Opcode = 0x04
	OpDataOut     Opcode = 0x05
	OpLogoutReq   Opcode = 0x06
	OpSNACKReq    Opcode = 0x10
)

// Target opcodes.
const (
	OpNOPIn        Opcode = 0x20
	OpSCSIResp     Opcode = 0x21
	OpTaskMgmtResp Opcode = 0x22
	OpLoginResp    Opcode = 0x23
	OpTextResp     Opcode = 0x24
	OpDataIn       Opcode = 0x25
	OpLogoutResp   Opcode = 0x26
	OpR2T          Opcode = 0x31
	OpAsyncMsg     Opcode = 0x32
	OpReject       Opcode = 0x3f
)

var opNames = map[Opcode]string{
	OpNOPOut: "NOP-Out", OpSCSICmd: "SCSI Command", OpTaskMgmtReq: "Task Management Request",
	OpLoginReq: "Login Request", OpTextReq: "Text Request", OpDataOut: "SCSI Data-Out",
	OpLogoutReq: "Logout Request", OpSNACKReq: "SNACK Request", OpNOPIn: "NOP-In",
	OpSCSIResp: "SCSI Response", OpTaskMgmtResp: "Task Management Response", OpLoginResp: "Login Response",
	OpTextResp: "Text Response", OpDataIn: "SCSI Data-In", OpLogoutResp: "Logout Response",
	OpR2T: "R2T", OpAsyncMsg: "Asynchronous Message", OpReject: "Reject",
}

func (o Opcode) String() string {
	if s, ok := opNames[o]; ok {
		return s
	}
	return fmt.Sprintf("opcode 0x%02x", uint8(o))
}

// Reserved is the value of a tag field that holds no tag.
const Reserved = 0xffffffff

// Header is a basic header segment. Its accessors read and write fields in
// place (big-endian, RFC 7143 §11); which fields mean something depends on
// the opcode.
type Header [BHSLen]byte

// Opcode is the PDU's opcode.
func (h *Header) Opcode() Opcode { return Opcode(h[0] & 0x3f) }

// Immediate reports the I bit (immediate delivery).
func (h *Header) Immediate() bool { return h[0]&0x40 != 0 }

// SetOpcode sets the opcode and clears the I bit.
func (h *Header) SetOpcode(o Opcode) { h[0] = byte(o) & 0x3f }

// Flags is byte 1 (the F bit and opcode-specific flags).
func (h *Header) Flags() byte { return h[1] }

// Final reports the F bit.
func (h *Header) Final() bool { return h[1]&0x80 != 0 }

// AHSLen is the length of the additional header segments in bytes.
func (h *Header) AHSLen() int { return int(h[4]) * 4 }

// DataLen is the data segment length in bytes (without padding).
func (h *Header) DataLen() int { return int(h[5])<<16 | int(h[6])<<8 | int(h[7]) }

// SetDataLen sets the data segment length; n must be below 1<<24.
func (h *Header) SetDataLen(n int) {
	h[5], h[6], h[7] = byte(n>>16), byte(n>>8), byte(n)
}

// LUNField is bytes 8..15 as sent (SAM-5 LUN structure, or ISID+TSIH on
// login PDUs).
func (h *Header) LUNField() uint64 { return binary.BigEndian.Uint64(h[8:16]) }

// SetLUNField sets bytes 8..15.
func (h *Header) SetLUNField(v uint64) { binary.BigEndian.PutUint64(h[8:16], v) }

// ITT is the initiator task tag.
func (h *Header) ITT() uint32 { return binary.BigEndian.Uint32(h[16:20]) }

// SetITT sets the initiator task tag.
func (h *Header) SetITT(v uint32) { binary.BigEndian.PutUint32(h[16:20], v) }

// U32 reads the 32-bit field at byte offset off (20, 24, 28, 32, 36, 40, 44).
func (h *Header) U32(off int) uint32 { return binary.BigEndian.Uint32(h[off : off+4]) }

// PutU32 writes the 32-bit field at byte offset off.
func (h *Header) PutU32(off int, v uint32) { binary.BigEndian.PutUint32(h[off:off+4], v) }

// Field offsets shared by several opcodes.
const (
	OffTTT      = 20 // target transfer tag (Data-Out, NOP, R2T, Text); EDTL on SCSI Command; RefTaskTag on TMF
	OffCmdSN    = 24 // CmdSN (requests) / StatSN (responses)
	OffExpSN    = 28 // ExpStatSN (requests) / ExpCmdSN (responses)
	OffMaxCmdSN = 32 // MaxCmdSN (responses); RefCmdSN on TMF
	OffDataSN   = 36 // DataSN, R2TSN, ExpDataSN
	OffOffset   = 40 // buffer offset; Time2Wait/Retain on logout response
	OffResidual = 44 // residual count; desired data transfer length on R2T
)

// SAM-5 LUN encoding helpers (single level: peripheral for < 256, flat up
// to 16383).

// EncodeLUN returns the 8-byte LUN field for a flat LUN number.
func EncodeLUN(lun uint64) uint64 {
	if lun < 256 {
		return lun << 48
	}
	return (0x4000 | lun&0x3fff) << 48
}

// DecodeLUN returns the flat LUN number in a LUN field, or false if the
// field uses an addressing method or level mhcodi does not serve.
func DecodeLUN(f uint64) (uint64, bool) {
	top := uint16(f >> 48)
	if f&0x0000ffffffffffff != 0 {
		return 0, false // second-level LUNs
	}
	switch top >> 14 {
	case 0: // peripheral device addressing, bus 0
		if top>>8 != 0 {
			return 0, false
		}
		return uint64(top & 0xff), true
	case 1: // flat space addressing
		return uint64(top & 0x3fff), true
	}
	return 0, false
}

// ISID returns the 6-byte initiator session ID of a login PDU.
func (h *Header) ISID() [6]byte {
	var b [6]byte
	copy(b[:], h[8:14])
	return b
}

// ISIDString is the ISID as "0x" and 12 hex digits.
func ISIDString(isid [6]byte) string { return "0x" + hex.EncodeToString(isid[:]) }

// TSIH returns the target session identifying handle of a login PDU.
func (h *Header) TSIH() uint16 { return binary.BigEndian.Uint16(h[14:16]) }

// SetISIDTSIH sets bytes 8..15 of a login response.
func (h *Header) SetISIDTSIH(isid [6]byte, tsih uint16) {
	copy(h[8:14], isid[:])
	binary.BigEndian.PutUint16(h[14:16], tsih)
}

// CDB returns the 16 CDB bytes of a SCSI Command.
func (h *Header) CDB() []byte { return h[32:48] }

func (h *Header) String() string {
	return fmt.Sprintf("%v itt=0x%08x flags=0x%02x dlen=%d", h.Opcode(), h.ITT(), h.Flags(), h.DataLen())
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Digest is the iSCSI CRC32C of b (RFC 7143 §13.1, Appendix B).
func Digest(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// digestUpdate continues a digest over more bytes.
func digestUpdate(crc uint32, b []byte) uint32 { return crc32.Update(crc, castagnoli, b) }

// Padding is how many zero bytes follow a data segment of n bytes.
func Padding(n int) int { return (4 - n%4) % 4 }
