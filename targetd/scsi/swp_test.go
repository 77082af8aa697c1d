package scsi

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// modeSelectControl sends MODE SELECT(6) from n with the control mode
// page as MODE SENSE reports it, its SWP bit set to swp.
func (f *fixture) modeSelectControl(n Nexus, swp bool) Result {
	f.t.Helper()
	ms := f.good(n, []byte{opModeSense6, 0x08, pageControl, 0, 255, 0}, nil)
	param := append([]byte{0, 0, 0, 0}, ms.Data[4:]...)
	param[4] &^= 0x80 // PS is reserved in MODE SELECT
	if swp {
		param[4+4] |= ctrlSWP
	} else {
		param[4+4] &^= ctrlSWP
	}
	return f.do(n, []byte{opModeSelect6, 0x10, 0, 0, byte(len(param)), 0}, param)
}

// TestSoftwareWriteProtect: SWP in the control mode page is changeable;
// set, it makes every command that writes the medium fail with DATA
// PROTECT for every nexus, reports WP in the mode parameter header,
// flushes first and tells the other nexuses; cleared, writes work again.
// (libiscsi's Sanitize.Readonly and ModeSense6.Control-SWP.)
func TestSoftwareWriteProtect(t *testing.T) {
	f := newFixture(t, thin)
	f.good(nexusB, tur(), nil)
	f.good(nexusA, rw10c(opWrite10, 0, 0, 4), fill(4*512, 'a'))

	res := f.good(nexusA, []byte{opModeSense6, 0, pcChangeable<<6 | pageControl, 0, 255, 0}, nil)
	require.Equal(t, byte(ctrlSWP), res.Data[4+8+4], "SWP is changeable")

	syncs := f.dev.Syncs()
	requireGood(t, f.modeSelectControl(nexusA, true))
	assert.Equal(t, syncs+1, f.dev.Syncs(), "setting SWP flushes the cache first")
	requireSense(t, f.do(nexusB, tur(), nil), SenseUnitAttention, ascModeParametersChanged)
	f.good(nexusA, tur(), nil)

	res = f.good(nexusA, []byte{opModeSense6, 0x08, pageControl, 0, 255, 0}, nil)
	assert.Equal(t, byte(0x80|0x10), res.Data[2], "WP and DPOFUA in the header")
	assert.Equal(t, byte(ctrlSWP), res.Data[4+4]&ctrlSWP, "SWP reads back")
	res = f.good(nexusA, []byte{opModeSense6, 0x08, pcDefault<<6 | pageControl, 0, 255, 0}, nil)
	assert.Zero(t, res.Data[4+4]&ctrlSWP, "the default is off")

	before := f.dev.Bytes()
	blk := fill(512, 'w')
	p := unmapParams([2]uint64{0, 1})
	for _, c := range []struct {
		name string
		cdb  []byte
		data []byte
	}{
		{"WRITE(6)", rw6(opWrite6, 0, 1), blk},
		{"WRITE(10)", rw10c(opWrite10, 0, 0, 1), blk},
		{"WRITE(12)", rw12c(opWrite12, 0, 0, 1), blk},
		{"WRITE(16)", rw16c(opWrite16, 0, 0, 1), blk},
		{"WRITE AND VERIFY(10)", rw10c(opWriteVerify10, 0, 0, 1), blk},
		{"WRITE AND VERIFY(16)", rw16c(opWriteVerify16, 0, 0, 1), blk},
		{"COMPARE AND WRITE", cawCDB(0, 1), append(fill(512, 'a'), blk...)},
		{"ORWRITE", rw16c(opOrWrite16, 0, 0, 1), blk},
		{"WRITE SAME(10)", ws10(0, 0, 1), blk},
		{"WRITE SAME(16) UNMAP", ws16(0x08, 0, 1), make([]byte, 512)},
		{"UNMAP", unmapCDB(len(p)), p},
	} {
		for _, n := range []Nexus{nexusA, nexusB} {
			requireSense(t, f.do(n, c.cdb, c.data), SenseDataProtect, ascWriteProtected)
		}
	}
	assert.Equal(t, before, f.dev.Bytes(), "nothing was written")
	// Reads, flushes and everything else still work.
	res = f.good(nexusB, rw10c(opRead10, 0, 0, 1), nil)
	assert.Equal(t, fill(512, 'a'), res.Data)
	f.good(nexusB, rw10c(opSyncCache10, 0, 0, 0), nil)
	f.good(nexusB, rw10c(opVerify10, 0, 0, 1), nil)

	// Another control page bit still may not change.
	ms := f.good(nexusA, []byte{opModeSense6, 0x08, pageControl, 0, 255, 0}, nil)
	bad := append([]byte{0, 0, 0, 0}, ms.Data[4:]...)
	bad[4+2] |= 0x04 // D_SENSE
	requireSense(t, f.do(nexusA, []byte{opModeSelect6, 0x10, 0, 0, byte(len(bad)), 0}, bad), SenseIllegalRequest, ascInvalidFieldInParamList)

	// Cleared from the other nexus: writes work again.
	requireGood(t, f.modeSelectControl(nexusB, false))
	requireSense(t, f.do(nexusA, tur(), nil), SenseUnitAttention, ascModeParametersChanged)
	f.good(nexusA, rw10c(opWrite10, 0, 0, 1), blk)
	res = f.good(nexusA, []byte{opModeSense6, 0x08, pageControl, 0, 255, 0}, nil)
	assert.Equal(t, byte(0x10), res.Data[2], "no WP")

	// Selecting the value it already has changes nothing: no unit attention.
	requireGood(t, f.modeSelectControl(nexusB, false))
	f.good(nexusA, tur(), nil)
}

// TestSoftwareWriteProtectFullyProvisioned: UNMAP stays an invalid opcode
// on a fully provisioned LU under SWP.
func TestSoftwareWriteProtectFullyProvisioned(t *testing.T) {
	f := newFixture(t)
	requireGood(t, f.modeSelectControl(nexusA, true))
	p := unmapParams([2]uint64{0, 1})
	requireSense(t, f.do(nexusA, unmapCDB(len(p)), p), SenseIllegalRequest, ascInvalidOpcode)
	requireSense(t, f.do(nexusA, rw10c(opWrite10, 0, 0, 1), fill(512, 1)), SenseDataProtect, ascWriteProtected)
}
