package scsi

import "encoding/binary"

// Operation codes handled by this layer (SPC-4, SBC-3).
const (
	opTestUnitReady     = 0x00
	opRequestSense      = 0x03
	opRead6             = 0x08
	opWrite6            = 0x0a
	opInquiry           = 0x12
	opModeSelect6       = 0x15
	opReserve6          = 0x16
	opRelease6          = 0x17
	opModeSense6        = 0x1a
	opStartStopUnit     = 0x1b
	opReadCapacity10    = 0x25
	opRead10            = 0x28
	opWrite10           = 0x2a
	opWriteVerify10     = 0x2e
	opVerify10          = 0x2f
	opPrefetch10        = 0x34
	opSyncCache10       = 0x35
	opWriteSame10       = 0x41
	opUnmap             = 0x42
	opModeSelect10      = 0x55
	opReserve10         = 0x56
	opRelease10         = 0x57
	opModeSense10       = 0x5a
	opPRIn              = 0x5e
	opPROut             = 0x5f
	opRead16            = 0x88
	opCompareAndWrite   = 0x89
	opWrite16           = 0x8a
	opOrWrite16         = 0x8b
	opWriteVerify16     = 0x8e
	opVerify16          = 0x8f
	opPrefetch16        = 0x90
	opSyncCache16       = 0x91
	opWriteSame16       = 0x93
	opServiceActionIn16 = 0x9e
	opReportLUNs        = 0xa0
	opMaintenanceIn     = 0xa3
	opRead12            = 0xa8
	opWrite12           = 0xaa
	opWriteVerify12     = 0xae
	opVerify12          = 0xaf
)

// Service actions.
const (
	saReadCapacity16     = 0x10 // SERVICE ACTION IN(16)
	saReportSupportedOps = 0x0c // MAINTENANCE IN
)

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }
func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }
func be24(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }

func be16put(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }
func be32put(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }
func be64put(b []byte, v uint64) { binary.BigEndian.PutUint64(b, v) }

// cdbLen is the length of the CDB for an opcode, from its group code
// (SPC-4 4.2.5.1). Vendor-specific groups report 0.
func cdbLen(op byte) int {
	switch op >> 5 {
	case 0:
		return 6
	case 1, 2:
		return 10
	case 4:
		return 16
	case 5:
		return 12
	}
	return 0
}

// rwCDB is the decoded addressing part of a READ/WRITE-class CDB.
type rwCDB struct {
	lba    uint64
	blocks uint32
	// flags is byte 1 of the CDB (PROTECT, DPO, FUA, ...), 0 for 6-byte CDBs.
	flags byte
}

// decodeRW decodes the LBA and transfer length of a 6/10/12/16-byte
// READ/WRITE/VERIFY-style CDB. The caller has checked len(cdb) >= cdbLen.
func decodeRW(cdb []byte) rwCDB {
	switch cdbLen(cdb[0]) {
	case 6:
		// 21-bit LBA; a transfer length of 0 means 256 blocks (SBC-3 5.8).
		n := uint32(cdb[4])
		if n == 0 {
			n = 256
		}
		return rwCDB{lba: uint64(be24(cdb[1:]) & 0x1fffff), blocks: n}
	case 10:
		return rwCDB{lba: uint64(be32(cdb[2:])), blocks: uint32(be16(cdb[7:])), flags: cdb[1]}
	case 12:
		return rwCDB{lba: uint64(be32(cdb[2:])), blocks: be32(cdb[6:]), flags: cdb[1]}
	default:
		return rwCDB{lba: be64(cdb[2:]), blocks: be32(cdb[10:]), flags: cdb[1]}
	}
}

// allocLen caps data at an allocation length: Data-In never exceeds what
// the CDB allows.
func allocLen(data []byte, n int) []byte {
	if len(data) > n {
		return data[:n]
	}
	return data
}
