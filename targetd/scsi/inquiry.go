package scsi

// Version descriptors claimed in standard INQUIRY data (SPC-4 table 45).
var versionDescriptors = [...]uint16{
	0x00a0, // SAM-5
	0x0960, // iSCSI
	0x0460, // SPC-4
	0x04c0, // SBC-3
}

// standardInquiryLen is the length of our standard INQUIRY data: 36 bytes
// of SPC-2 data, 20 vendor-specific, 2 reserved, 8 version descriptors
// and 22 reserved (the layout Linux targets use).
const standardInquiryLen = 96

// standardInquiry builds standard INQUIRY data (SPC-4 6.6.2) with the
// given peripheral byte (0x00: connected disk; 0x7f: no LU here).
func standardInquiry(peripheral byte, vendor, product, rev string) []byte {
	b := make([]byte, standardInquiryLen)
	b[0] = peripheral
	b[2] = 0x06        // VERSION: SPC-4
	b[3] = 0x10 | 0x02 // HISUP, RESPONSE DATA FORMAT 2
	b[4] = standardInquiryLen - 5
	b[7] = 0x02 // CMDQUE: tasks may run concurrently
	padCopy(b[8:16], vendor)
	padCopy(b[16:32], product)
	padCopy(b[32:36], rev)
	for i, v := range versionDescriptors {
		be16put(b[58+2*i:], v)
	}
	return b
}

// padCopy copies s into b padded with spaces, as SPC-4 4.4.1 asks for
// ASCII fields.
func padCopy(b []byte, s string) {
	n := copy(b, s)
	for i := n; i < len(b); i++ {
		b[i] = ' '
	}
}

// VPD page codes we support, in ascending order (page 0x00 lists them).
const (
	vpdSupported       = 0x00
	vpdSerial          = 0x80
	vpdDeviceID        = 0x83
	vpdBlockLimits     = 0xb0
	vpdBlockDevChars   = 0xb1
	vpdLBProvisioning  = 0xb2
	blockLimitsPageLen = 0x3c
)

var supportedVPDs = [...]byte{vpdSupported, vpdSerial, vpdDeviceID, vpdBlockLimits, vpdBlockDevChars, vpdLBProvisioning}

// inquiry handles INQUIRY (SPC-4 6.6).
func (x *exec) inquiry() Result {
	cdb := x.cmd.CDB
	alloc := int(be16(cdb[3:]))
	evpd := cdb[1]&0x01 != 0
	if cdb[1]&0x02 != 0 {
		return invalidCDBField(1, 1) // CMDDT is obsolete
	}
	if !evpd && cdb[2] != 0 {
		return invalidCDBField(2, -1)
	}
	var b []byte
	if !evpd {
		b = standardInquiry(0x00, x.lu.cfg.VendorID, x.lu.cfg.ProductID, x.lu.cfg.Revision)
	} else {
		b = x.vpd(cdb[2])
		if b == nil {
			return invalidCDBField(2, -1)
		}
	}
	b = allocLen(b, alloc)
	return Result{Status: StatusGood, Data: b, TransferLen: uint32(len(b))}
}

// vpd builds VPD page code, or returns nil for an unsupported page.
func (x *exec) vpd(code byte) []byte {
	lu := x.lu
	var body []byte
	switch code {
	case vpdSupported:
		body = supportedVPDs[:]
	case vpdSerial:
		body = []byte(lu.cfg.Serial)
	case vpdDeviceID:
		body = x.deviceIdentification()
	case vpdBlockLimits:
		body = lu.blockLimits()
	case vpdBlockDevChars:
		body = make([]byte, blockLimitsPageLen)
		be16put(body[0:], 1) // MEDIUM ROTATION RATE: non-rotating medium
	case vpdLBProvisioning:
		body = make([]byte, 4)
		if lu.cfg.ThinProvisioned {
			body[1] = 0x80 | 0x40 | 0x20 // LBPU, LBPWS, LBPWS10
			if lu.dev.DiscardZeroes() {
				body[1] |= 0x04 // LBPRZ
			}
			body[2] = 0x02 // PROVISIONING TYPE: thin provisioned
		}
	default:
		return nil
	}
	b := make([]byte, 4+len(body))
	b[1] = code
	be16put(b[2:], uint16(len(body)))
	copy(b[4:], body)
	return b
}

// Designator header bytes (SPC-4 7.8.6.1): byte 0 is PROTOCOL IDENTIFIER
// and CODE SET, byte 1 PIV, ASSOCIATION and DESIGNATOR TYPE.
const (
	codeSetBinary = 0x01
	codeSetUTF8   = 0x03
	protoISCSI    = 0x50 // protocol identifier 5, with PIV set in byte 1
	pivAssocPort  = 0x80 | 0x10
	pivAssocTgt   = 0x80 | 0x20
	desigNAA      = 0x03
	desigRelPort  = 0x04
	desigSCSIName = 0x08
)

// deviceIdentification builds the body of VPD page 0x83: the LU's NAA
// name, the relative target port, the target port name and the target
// device name of the nexus the command came through.
func (x *exec) deviceIdentification() []byte {
	n := x.cmd.Nexus
	var b []byte
	// NAA IEEE registered / locally assigned, associated with the LU.
	b = append(b, codeSetBinary, desigNAA, 0, 8)
	b = append(b, x.lu.cfg.WWN[:]...)
	// Relative target port identifier.
	b = append(b, protoISCSI|codeSetBinary, pivAssocPort|desigRelPort, 0, 4, 0, 0, byte(n.RelativePortID>>8), byte(n.RelativePortID))
	if n.TargetName != "" {
		b = appendSCSIName(b, pivAssocPort, n.TargetPort())
		b = appendSCSIName(b, pivAssocTgt, n.TargetName)
	}
	return b
}

// appendSCSIName appends a SCSI name string designator: UTF-8, null
// terminated, padded to a multiple of 4 bytes.
func appendSCSIName(b []byte, assoc byte, name string) []byte {
	l := (len(name) + 1 + 3) &^ 3
	if l > 252 {
		l = 252
		name = name[:l-1]
	}
	b = append(b, protoISCSI|codeSetUTF8, assoc|desigSCSIName, 0, byte(l))
	b = append(b, name...)
	for i := len(name); i < l; i++ {
		b = append(b, 0)
	}
	return b
}

// blockLimits builds the body of VPD page 0xB0 (SBC-3 6.5.3).
func (lu *LU) blockLimits() []byte {
	b := make([]byte, blockLimitsPageLen)
	b[0] = 0x01 // WSNZ: WRITE SAME needs a non-zero block count
	b[1] = byte(lu.maxCAW())
	be16put(b[2:], uint16(1)<<lu.lbppbe) // OPTIMAL TRANSFER LENGTH GRANULARITY
	be32put(b[4:], lu.cfg.MaxTransferBlocks)
	if lu.cfg.ThinProvisioned {
		be32put(b[16:], lu.cfg.MaxUnmapBlocks)
		be32put(b[20:], lu.cfg.MaxUnmapDescriptors)
		be32put(b[24:], uint32(1)<<lu.lbppbe) // OPTIMAL UNMAP GRANULARITY
		be32put(b[28:], 0x80000000)           // UGAVALID, alignment 0
	}
	be64put(b[32:], uint64(lu.cfg.MaxWriteSameBlocks))
	return b
}
