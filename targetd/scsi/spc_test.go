package scsi

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestInquiryStandard(t *testing.T) {
	f := newFixture(t)
	res := f.good(nexusA, inquiryCDB(false, 0, 260), nil)
	d := res.Data
	require.Len(t, d, standardInquiryLen)
	assert.EqualValues(t, len(d), res.TransferLen)
	assert.Equal(t, byte(0), d[0], "connected direct-access device")
	assert.Equal(t, byte(6), d[2], "SPC-4")
	assert.Equal(t, byte(2), d[3]&0x0f, "response data format")
	assert.Equal(t, byte(len(d)-5), d[4], "additional length")
	assert.Equal(t, "MHCODI  TESTDISK        0001", string(d[8:36]))
	assert.Equal(t, []byte{0x04, 0xc0}, d[64:66], "SBC-3 version descriptor")
	for n := 0; n < 256; n++ {
		res := f.good(nexusA, inquiryCDB(false, 0, uint16(n)), nil)
		assert.Len(t, res.Data, min(n, standardInquiryLen))
	}
	requireSense(t, f.do(nexusA, inquiryCDB(false, 1, 256), nil), SenseIllegalRequest, ascInvalidFieldInCDB)
	requireSense(t, f.do(nexusA, inquiryCDB(true, 0x42, 256), nil), SenseIllegalRequest, ascInvalidFieldInCDB)
}

func TestInquiryVPD(t *testing.T) {
	f := newFixture(t, thin, phys4k)
	page := func(code byte) []byte {
		res := f.good(nexusA, inquiryCDB(true, code, 1024), nil)
		require.Equal(t, code, res.Data[1])
		require.Equal(t, len(res.Data)-4, int(be16(res.Data[2:])), "page length of 0x%02x", code)
		return res.Data
	}
	sup := page(vpdSupported)
	assert.Equal(t, []byte{0, 0x80, 0x83, 0xb0, 0xb1, 0xb2}, sup[4:])
	for _, c := range sup[4:] {
		page(c)
	}
	assert.Equal(t, "MHC0123456789", string(page(vpdSerial)[4:]))

	id := page(vpdDeviceID)[4:]
	assert.Equal(t, []byte{0x01, 0x03, 0x00, 0x08, 0x30, 1, 2, 3, 4, 5, 6, 7}, id[:12], "NAA designator")
	assert.Equal(t, []byte{0x51, 0x94, 0, 4, 0, 0, 0, 1}, id[12:20], "relative target port")
	name := nexusA.TargetPort()
	assert.Equal(t, byte(0x53), id[20])
	assert.Equal(t, byte(0x98), id[21])
	assert.Equal(t, name, string(id[24:24+len(name)]))
	assert.Zero(t, id[3]%4)

	bl := page(vpdBlockLimits)
	assert.Equal(t, byte(0x3c), bl[3])
	assert.Equal(t, byte(1), bl[4]&1, "WSNZ")
	assert.EqualValues(t, 16384, be64(bl[36:]), "MAXIMUM WRITE SAME LENGTH")
	assert.Equal(t, byte(255), bl[5], "MAXIMUM COMPARE AND WRITE LENGTH")
	assert.EqualValues(t, 8, be16(bl[6:]), "granularity: 8 logical blocks per physical")
	assert.EqualValues(t, 16384, be32(bl[8:]), "MAXIMUM TRANSFER LENGTH")
	assert.EqualValues(t, defaultMaxUnmap, be32(bl[20:]))
	assert.EqualValues(t, defaultMaxUnmapDescs, be32(bl[24:]))
	assert.EqualValues(t, 8, be32(bl[28:]))

	lbp := page(vpdLBProvisioning)
	assert.Equal(t, byte(0xe4), lbp[5], "LBPU LBPWS LBPWS10 LBPRZ")
	assert.Equal(t, byte(0x02), lbp[6]&7, "thin provisioned")

	assert.EqualValues(t, 1, be16(page(vpdBlockDevChars)[4:]), "non-rotating")

	// Fully provisioned: no UNMAP limits, no LBP bits.
	f2 := newFixture(t)
	res := f2.good(nexusA, inquiryCDB(true, vpdBlockLimits, 255), nil)
	assert.Zero(t, be32(res.Data[20:]))
	assert.Zero(t, be32(res.Data[24:]))
	res = f2.good(nexusA, inquiryCDB(true, vpdLBProvisioning, 255), nil)
	assert.Zero(t, res.Data[5])
}

func TestAbsentLUN(t *testing.T) {
	f := newFixture(t)
	res, err := f.exec(context.Background(), nexusA, 3, inquiryCDB(false, 0, 96), nil)
	require.NoError(t, err)
	requireGood(t, res)
	assert.Equal(t, byte(0x7f), res.Data[0], "qualifier 011b, type 1Fh")
	res, err = f.exec(context.Background(), nexusA, 3, tur(), nil)
	require.NoError(t, err)
	requireSense(t, res, SenseIllegalRequest, ascLUNotSupported)
	res, err = f.exec(context.Background(), nexusA, 3, []byte{opRequestSense, 0, 0, 0, 18, 0}, nil)
	require.NoError(t, err)
	requireGood(t, res)
	k, a, _, _ := Sense(res.Data)
	assert.Equal(t, [2]byte{SenseIllegalRequest, 0x25}, [2]byte{k, a})
}

func reportLUNsCDB(alloc uint32) []byte {
	c := make([]byte, 12)
	c[0] = opReportLUNs
	be32put(c[6:], alloc)
	return c
}

func TestReportLUNs(t *testing.T) {
	f := newFixture(t)
	lu2, err := NewLU(LUConfig{Dev: NewMemDev(1<<20, false)})
	require.NoError(t, err)
	require.NoError(t, f.tgt.AddLU(300, lu2))
	require.Error(t, f.tgt.AddLU(300, lu2))
	require.Error(t, f.tgt.AddLU(5, lu2), "LU already attached")
	require.Error(t, f.tgt.AddLU(1<<20, lu2))

	// LUN 0 has seen nexusA? Not yet: no REPORTED LUNS DATA HAS CHANGED.
	for _, lun := range []uint64{0, 7} {
		res, err := f.exec(context.Background(), nexusA, lun, reportLUNsCDB(256), nil)
		require.NoError(t, err)
		requireGood(t, res)
		assert.Equal(t, []byte{0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x41, 0x2c, 0, 0, 0, 0, 0, 0}, res.Data)
	}
	requireSense(t, f.do(nexusA, reportLUNsCDB(15), nil), SenseIllegalRequest, ascInvalidFieldInCDB)

	// Removing a LUN tells nexuses that know LUN 0.
	f.good(nexusA, tur(), nil)
	require.Same(t, lu2, f.tgt.RemoveLU(300))
	assert.Nil(t, f.tgt.RemoveLU(300))
	requireSense(t, f.do(nexusA, tur(), nil), SenseUnitAttention, ascReportedLUNsDataChanged)
	f.good(nexusA, tur(), nil)
}

func TestReadCapacity(t *testing.T) {
	f := newFixture(t, thin, phys4k)
	res := f.good(nexusA, make([]byte, 10), nil) // TUR-sized CDB is fine
	_ = res
	c := make([]byte, 10)
	c[0] = opReadCapacity10
	res = f.good(nexusA, c, nil)
	assert.Equal(t, []byte{0, 0, 0x03, 0xff, 0, 0, 2, 0}, res.Data)
	c[5] = 1 // LBA without PMI
	requireSense(t, f.do(nexusA, c, nil), SenseIllegalRequest, ascInvalidFieldInCDB)

	rc16 := func(alloc uint32) []byte {
		c := make([]byte, 16)
		c[0], c[1] = opServiceActionIn16, saReadCapacity16
		be32put(c[10:], alloc)
		return c
	}
	res = f.good(nexusA, rc16(32), nil)
	require.Len(t, res.Data, 32)
	assert.EqualValues(t, testBlocks-1, be64(res.Data))
	assert.EqualValues(t, 512, be32(res.Data[8:]))
	assert.Equal(t, byte(3), res.Data[13], "LBPPBE")
	assert.Equal(t, byte(0xc0), res.Data[14], "LBPME LBPRZ")
	for n := uint32(0); n < 16; n++ {
		res = f.good(nexusA, rc16(n), nil)
		assert.Len(t, res.Data, int(n))
	}
	c = rc16(32)
	c[1] = 0x11
	requireSense(t, f.do(nexusA, c, nil), SenseIllegalRequest, ascInvalidFieldInCDB)
}

func TestModeSense(t *testing.T) {
	f := newFixture(t)
	ms6 := func(pc, page byte, alloc byte) []byte { return []byte{opModeSense6, 0, pc<<6 | page, 0, alloc, 0} }
	res := f.good(nexusA, ms6(pcCurrent, pageAllPages, 255), nil)
	d := res.Data
	assert.Equal(t, byte(len(d)-1), d[0])
	assert.Equal(t, byte(0x10), d[2], "DPOFUA")
	assert.Equal(t, byte(8), d[3], "block descriptor")
	assert.EqualValues(t, 512, be24(d[9:]))
	pages := d[12:]
	assert.Equal(t, byte(pageCaching), pages[0])
	assert.Equal(t, byte(0x04), pages[2], "WCE")
	assert.Equal(t, byte(pageControl), pages[20])

	res = f.good(nexusA, ms6(pcCurrent, pageAllPages, 4), nil)
	assert.Len(t, res.Data, 4)
	assert.EqualValues(t, 4, res.TransferLen)

	res = f.good(nexusA, ms6(pcChangeable, pageCaching, 255), nil)
	assert.Equal(t, byte(0x04), res.Data[12+2])
	res = f.good(nexusA, ms6(pcChangeable, pageControl, 255), nil)
	assert.Equal(t, []byte{0, 0, ctrlSWP, 0, 0, 0, 0, 0, 0, 0}, res.Data[12+2:], "only SWP is changeable")
	res = f.good(nexusA, ms6(pcDefault, pageControl, 255), nil)
	assert.Equal(t, byte(pageControl), res.Data[12])
	requireSense(t, f.do(nexusA, ms6(pcSaved, pageAllPages, 255), nil), SenseIllegalRequest, ascSavingParamsNotSupported)
	requireSense(t, f.do(nexusA, ms6(pcCurrent, 0x19, 255), nil), SenseIllegalRequest, ascInvalidFieldInCDB)

	// MODE SENSE(10) with LLBAA and DBD.
	c := []byte{opModeSense10, 0x10, pageCaching, 0, 0, 0, 0, 1, 0, 0}
	res = f.good(nexusA, c, nil)
	assert.Equal(t, byte(1), res.Data[4]&1, "LONGLBA")
	assert.EqualValues(t, 16, be16(res.Data[6:]))
	assert.EqualValues(t, testBlocks, be64(res.Data[8:]))
	assert.EqualValues(t, len(res.Data)-2, be16(res.Data))
	c[1] = 0x08
	res = f.good(nexusA, c, nil)
	assert.Zero(t, be16(res.Data[6:]))
	assert.Equal(t, byte(pageCaching), res.Data[8])
}

func TestModeSelect(t *testing.T) {
	f := newFixture(t)
	f.good(nexusB, tur(), nil) // B is known: it gets MODE PARAMETERS CHANGED
	ms := f.good(nexusA, []byte{opModeSense6, 0x08, pageCaching, 0, 255, 0}, nil)
	param := append([]byte{0, 0, 0, 0}, ms.Data[4:]...)
	param[4+2] &^= 0x04 // WCE off
	sel := []byte{opModeSelect6, 0x10, 0, 0, byte(len(param)), 0}
	f.good(nexusA, sel, param)
	assert.False(t, f.lu.wce.Load())
	assert.EqualValues(t, 1, f.dev.Syncs(), "turning WCE off flushes")
	requireSense(t, f.do(nexusB, tur(), nil), SenseUnitAttention, ascModeParametersChanged)
	f.good(nexusA, tur(), nil)

	// A bit that is not changeable.
	bad := append([]byte(nil), param...)
	bad[4+3] = 0x80
	res := f.do(nexusA, sel, bad)
	requireSense(t, res, SenseIllegalRequest, ascInvalidFieldInParamList)
	assert.EqualValues(t, 7, be16(res.Sense[16:]))
	// SP=1, short data, unknown page.
	requireSense(t, f.do(nexusA, []byte{opModeSelect6, 0x11, 0, 0, byte(len(param)), 0}, param), SenseIllegalRequest, ascInvalidFieldInCDB)
	requireSense(t, f.do(nexusA, sel, param[:10]), SenseIllegalRequest, ascParamListLengthError)
	bad = append([]byte(nil), param...)
	bad[4] = 0x19
	requireSense(t, f.do(nexusA, sel, bad), SenseIllegalRequest, ascInvalidFieldInParamList)

	// MODE SELECT(10) turning WCE back on, with a block descriptor.
	p10 := make([]byte, 8+8+20)
	be16put(p10[6:], 8)
	p10[8+6] = 2 // block length 512
	copy(p10[16:], f.lu.modePage(pageCaching, pcCurrent))
	p10[16+2] |= 0x04
	c := []byte{opModeSelect10, 0x10, 0, 0, 0, 0, 0, 0, byte(len(p10)), 0}
	f.good(nexusA, c, p10)
	assert.True(t, f.lu.wce.Load())
	p10[8+6] = 4 // 1024-byte blocks: no
	requireSense(t, f.do(nexusA, c, p10), SenseIllegalRequest, ascInvalidFieldInParamList)
}

func rsocCDB(rctd bool, options byte, op byte, sa uint16, alloc uint32) []byte {
	c := make([]byte, 12)
	c[0], c[1], c[2], c[3] = opMaintenanceIn, saReportSupportedOps, options, op
	if rctd {
		c[2] |= 0x80
	}
	be16put(c[4:], sa)
	be32put(c[6:], alloc)
	return c
}

func TestReportSupportedOpcodes(t *testing.T) {
	f := newFixture(t)
	res := f.good(nexusA, rsocCDB(false, 0, 0, 0, 65535), nil)
	d := res.Data
	require.EqualValues(t, len(d)-4, be32(d))
	type desc struct {
		op       byte
		sa       uint16
		servactv bool
	}
	var all []desc
	for p := d[4:]; len(p) >= 8; p = p[8:] {
		assert.Zero(t, p[5]&0x02, "no CTDP without RCTD")
		all = append(all, desc{p[0], be16(p[2:]), p[5]&1 != 0})
		if p[5]&1 == 0 {
			assert.Zero(t, be16(p[2:]))
		}
		assert.NotEqual(t, byte(opUnmap), p[0], "no UNMAP on a fully provisioned LU")
	}
	assert.Len(t, all, len(supportedOps)-1)

	for _, o := range all {
		opt1 := f.do(nexusA, rsocCDB(false, 1, o.op, o.sa, 65535), nil)
		opt2 := f.do(nexusA, rsocCDB(false, 2, o.op, o.sa, 65535), nil)
		if o.servactv {
			requireSense(t, opt1, SenseIllegalRequest, ascInvalidFieldInCDB)
			requireGood(t, opt2)
			opt1 = opt2
		} else {
			requireGood(t, opt1)
			requireSense(t, opt2, SenseIllegalRequest, ascInvalidFieldInCDB)
		}
		assert.Equal(t, byte(3), opt1.Data[1]&7, "supported")
		assert.NotZero(t, be16(opt1.Data[2:]))
		assert.Equal(t, o.op, opt1.Data[4], "CDB usage data starts with the opcode")
		assert.Len(t, opt1.Data, 4+int(be16(opt1.Data[2:])))
	}

	// DPOFUA is advertised, so READ/WRITE usage data must show DPO and FUA.
	for _, op := range []byte{opRead10, opWrite10, opRead12, opWrite16} {
		res := f.good(nexusA, rsocCDB(false, 1, op, 0, 65535), nil)
		assert.Equal(t, byte(0x18), res.Data[5]&0x18)
	}
	res = f.good(nexusA, rsocCDB(false, 1, opVerify10, 0, 65535), nil)
	assert.Equal(t, byte(0x10), res.Data[5]&0x10)

	// RCTD: every descriptor has a 12-byte timeouts descriptor.
	res = f.good(nexusA, rsocCDB(true, 0, 0, 0, 65535), nil)
	n := 0
	for p := res.Data[4:]; len(p) >= 20; p = p[20:] {
		assert.Equal(t, byte(0x02), p[5]&0x02, "CTDP")
		assert.EqualValues(t, 0x0a, be16(p[8:]))
		n++
	}
	assert.Equal(t, len(all), n)
	res = f.good(nexusA, rsocCDB(true, 1, opRead16, 0, 65535), nil)
	assert.Equal(t, byte(0x83), res.Data[1])
	assert.Len(t, res.Data, 4+16+12)

	res = f.good(nexusA, rsocCDB(false, 1, 0xc5, 0, 65535), nil)
	assert.Equal(t, byte(1), res.Data[1]&7, "not supported")
	requireSense(t, f.do(nexusA, rsocCDB(false, 5, 0, 0, 65535), nil), SenseIllegalRequest, ascInvalidFieldInCDB)
	res = f.good(nexusA, rsocCDB(false, 0, 0, 0, 100), nil)
	assert.Len(t, res.Data, 100)

	thinF := newFixture(t, thin)
	res = thinF.good(nexusA, rsocCDB(false, 1, opUnmap, 0, 64), nil)
	assert.Equal(t, byte(3), res.Data[1]&7)
}

func TestRequestSenseAndUnitAttentions(t *testing.T) {
	f := newFixture(t)
	rs := []byte{opRequestSense, 0, 0, 0, 252, 0}
	res := f.good(nexusA, rs, nil)
	assert.Len(t, res.Data, fixedSenseLen)
	k, a, q, _ := Sense(res.Data)
	assert.Equal(t, [3]byte{0, 0, 0}, [3]byte{k, a, q})

	f.good(nexusB, tur(), nil)
	f.lu.NotifyResized()
	// INQUIRY does not report or clear it; REQUEST SENSE returns and clears it.
	f.good(nexusA, inquiryCDB(false, 0, 96), nil)
	res = f.good(nexusA, rs, nil)
	k, a, q, _ = Sense(res.Data)
	assert.Equal(t, [3]byte{SenseUnitAttention, 0x2a, 0x09}, [3]byte{k, a, q})
	f.good(nexusA, tur(), nil)
	// B gets it as CHECK CONDITION on its next command, once.
	requireSense(t, f.do(nexusB, rw10c(opRead10, 0, 0, 1), nil), SenseUnitAttention, ascCapacityDataChanged)
	f.good(nexusB, rw10c(opRead10, 0, 0, 1), nil)
	requireSense(t, f.do(nexusA, []byte{opRequestSense, 1, 0, 0, 252, 0}, nil), SenseIllegalRequest, ascInvalidFieldInCDB)
}

func TestResizeGrowsCapacity(t *testing.T) {
	f := newFixture(t)
	f.good(nexusA, tur(), nil)
	f.dev.Resize(2 * testBlocks * 512)
	f.lu.NotifyResized()
	requireSense(t, f.do(nexusA, rw10c(opRead10, 0, testBlocks, 1), nil), SenseUnitAttention, ascCapacityDataChanged)
	f.good(nexusA, rw10c(opRead10, 0, testBlocks, 1), nil)
}

func TestStartStopUnit(t *testing.T) {
	f := newFixture(t)
	f.good(nexusA, []byte{opStartStopUnit, 0, 0, 0, 0x01, 0}, nil)
	f.good(nexusA, []byte{opStartStopUnit, 0, 0, 0, 0x00, 0}, nil)
	assert.EqualValues(t, 1, f.dev.Syncs())
	requireSense(t, f.do(nexusA, []byte{opStartStopUnit, 0, 0, 0, 0x02, 0}, nil), SenseIllegalRequest, ascInvalidFieldInCDB)
}

func TestNewLUValidation(t *testing.T) {
	dev := NewMemDev(1<<20, false)
	for _, cfg := range []LUConfig{
		{},
		{Dev: dev, LogicalBlockSize: 1024},
		{Dev: dev, PhysicalBlockSize: 1536},
		{Dev: dev, Serial: "012345678901234567890"},
		{Dev: dev, Serial: "bad\x01"},
		{Dev: dev, VendorID: "TOOLONGVENDOR"},
	} {
		_, err := NewLU(cfg)
		assert.Error(t, err, "%+v", cfg)
	}
}
