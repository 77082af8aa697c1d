package scsi

// Sense keys (SPC-4 table 52).
const (
	SenseNoSense        = 0x00
	SenseNotReady       = 0x02
	SenseMediumError    = 0x03
	SenseIllegalRequest = 0x05
	SenseUnitAttention  = 0x06
	SenseDataProtect    = 0x07
	SenseAbortedCommand = 0x0b
	SenseMiscompare     = 0x0e
)

// asc is an additional sense code and its qualifier, ASC in the high byte.
type asc uint16

// Additional sense codes this layer reports (SPC-4 table D.1).
const (
	ascNone                     asc = 0x0000
	ascWriteError               asc = 0x0c00
	ascInvalidFieldInIU         asc = 0x0e03
	ascUnrecoveredReadError     asc = 0x1100
	ascParamListLengthError     asc = 0x1a00
	ascMiscompareDuringVerify   asc = 0x1d00
	ascInvalidOpcode            asc = 0x2000
	ascLBAOutOfRange            asc = 0x2100
	ascInvalidFieldInCDB        asc = 0x2400
	ascLUNotSupported           asc = 0x2500
	ascInvalidFieldInParamList  asc = 0x2600
	ascInvalidReleaseOfPR       asc = 0x2604
	ascWriteProtected           asc = 0x2700
	ascSpaceAllocFailedWP       asc = 0x2707 // SPACE ALLOCATION FAILED WRITE PROTECT
	ascPowerOnReset             asc = 0x2900
	ascBusDeviceReset           asc = 0x2903
	ascModeParametersChanged    asc = 0x2a01
	ascReservationsPreempted    asc = 0x2a03
	ascReservationsReleased     asc = 0x2a04
	ascRegistrationsPreempted   asc = 0x2a05
	ascCapacityDataChanged      asc = 0x2a09
	ascCommandsCleared          asc = 0x2f00
	ascSavingParamsNotSupported asc = 0x3900
	ascReportedLUNsDataChanged  asc = 0x3f0e
)

// fixedSenseLen is the length of the fixed-format sense data we build.
const fixedSenseLen = 18

// senseInfo describes one sense data block. It is a value so that building
// a CHECK CONDITION allocates only the final 18-byte slice.
type senseInfo struct {
	key byte
	asc asc
	// info is the INFORMATION field, reported when infoValid.
	info      uint32
	infoValid bool
	// sksv marks a sense-key-specific field pointer: fieldPtr is the byte
	// of the CDB (cdb) or of the parameter list (!cdb) in error, bitPtr the
	// bit plus one (0: no bit pointer).
	sksv     bool
	cdb      bool
	fieldPtr uint16
	bitPtr   uint8
}

// bytes returns fixed-format sense data (SPC-4 4.5.3). Descriptor format is
// never used: the control mode page reports D_SENSE=0 and does not let it
// change.
func (s senseInfo) bytes() []byte {
	b := make([]byte, fixedSenseLen)
	b[0] = 0x70 // current error, fixed format
	if s.infoValid {
		b[0] |= 0x80
		be32put(b[3:], s.info)
	}
	b[2] = s.key
	b[7] = fixedSenseLen - 8
	b[12] = byte(s.asc >> 8)
	b[13] = byte(s.asc)
	if s.sksv {
		b[15] = 0x80
		if s.cdb {
			b[15] |= 0x40
		}
		if s.bitPtr > 0 {
			b[15] |= 0x08 | (s.bitPtr-1)&7
		}
		be16put(b[16:], s.fieldPtr)
	}
	return b
}

// checkCondition builds a CHECK CONDITION result without sense-key-specific
// information.
func checkCondition(key byte, code asc) Result {
	return Result{Status: StatusCheckCondition, Sense: senseInfo{key: key, asc: code}.bytes()}
}

// illegalRequest is CHECK CONDITION, ILLEGAL REQUEST with the given code.
func illegalRequest(code asc) Result { return checkCondition(SenseIllegalRequest, code) }

// invalidCDBField reports INVALID FIELD IN CDB pointing at byte field (and
// bit, 0..7, or -1 for the whole byte), which initiators show to users and
// libiscsi uses to tell "invalid opcode" from "invalid field".
func invalidCDBField(field int, bit int) Result {
	s := senseInfo{key: SenseIllegalRequest, asc: ascInvalidFieldInCDB, sksv: true, cdb: true, fieldPtr: uint16(field)}
	if bit >= 0 {
		s.bitPtr = uint8(bit) + 1
	}
	return Result{Status: StatusCheckCondition, Sense: s.bytes()}
}

// invalidParamField reports INVALID FIELD IN PARAMETER LIST at byte field.
func invalidParamField(field int) Result {
	s := senseInfo{key: SenseIllegalRequest, asc: ascInvalidFieldInParamList, sksv: true, fieldPtr: uint16(field)}
	return Result{Status: StatusCheckCondition, Sense: s.bytes()}
}

// lbaOutOfRange is the answer to any access beyond the capacity.
func lbaOutOfRange() Result { return illegalRequest(ascLBAOutOfRange) }

// invalidOpcode is the answer to an opcode (or service action) we do not
// implement; the field pointer marks byte 0 as libiscsi expects.
func invalidOpcode() Result {
	s := senseInfo{key: SenseIllegalRequest, asc: ascInvalidOpcode, sksv: true, cdb: true}
	return Result{Status: StatusCheckCondition, Sense: s.bytes()}
}

// invalidServiceAction reports an unknown service action of a command that
// has service actions (INVALID FIELD IN CDB, field pointer 1, which
// libiscsi accepts as "not implemented").
func invalidServiceAction() Result { return invalidCDBField(1, 4) }

// miscompare is CHECK CONDITION, MISCOMPARE, MISCOMPARE DURING VERIFY
// OPERATION with the offset of the first differing byte in INFORMATION.
func miscompare(offset int) Result {
	s := senseInfo{key: SenseMiscompare, asc: ascMiscompareDuringVerify, info: uint32(offset), infoValid: true}
	return Result{Status: StatusCheckCondition, Sense: s.bytes()}
}

// reservationConflict is the RESERVATION CONFLICT status (no sense data).
func reservationConflict() Result { return Result{Status: StatusReservationConflict} }

// good is GOOD status with no data.
func good() Result { return Result{Status: StatusGood} }

// Sense decodes the sense key, additional sense code and qualifier of
// fixed- or descriptor-format sense data, for tests and logs; ok is false
// when sense is too short to hold them.
func Sense(sense []byte) (key, ascode, ascq byte, ok bool) {
	if len(sense) < 4 {
		return 0, 0, 0, false
	}
	switch sense[0] & 0x7f {
	case 0x70, 0x71:
		if len(sense) < 14 {
			return 0, 0, 0, false
		}
		return sense[2] & 0x0f, sense[12], sense[13], true
	case 0x72, 0x73:
		return sense[1] & 0x0f, sense[2], sense[3], true
	}
	return 0, 0, 0, false
}
