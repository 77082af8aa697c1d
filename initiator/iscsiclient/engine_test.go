package iscsiclient

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/iscsi/pdu"
)

func testEngine() *engine {
	p := Params{TargetMaxRecvDataSegmentLength: 8192, MaxRecvDataSegmentLength: 8192,
		MaxBurstLength: 65536, FirstBurstLength: 16384, ImmediateData: true, InitialR2T: false}
	return newEngine(p, 0, 10, 10, 12, 5)
}

// targetPDU builds a PDU as the target would send it.
func targetPDU(op pdu.Opcode, itt uint32, statSN, expCmdSN, maxCmdSN uint32) pdu.Header {
	var h pdu.Header
	h.SetOpcode(op)
	h.SetITT(itt)
	h.PutU32(pdu.OffCmdSN, statSN)
	h.PutU32(pdu.OffExpSN, expCmdSN)
	h.PutU32(pdu.OffMaxCmdSN, maxCmdSN)
	return h
}

func TestEngineWriteImmediateUnsolicitedAndR2T(t *testing.T) {
	e := testEngine()
	data := make([]byte, 40960)
	for i := range data {
		data[i] = byte(i / 512)
	}
	tk, out := e.start(write16(100, 80, data, true))
	// Command with 8 KiB immediate data, then 8 KiB unsolicited Data-Out
	// to reach FirstBurstLength (16 KiB).
	require.Len(t, out, 2)
	c := out[0].h
	assert.Equal(t, pdu.OpSCSICmd, c.Opcode())
	assert.Equal(t, byte(0x21), c[1], "W and simple attribute, no F: unsolicited data follows")
	assert.Equal(t, uint32(40960), c.U32(pdu.OffTTT), "EDTL")
	assert.Equal(t, uint32(10), c.U32(pdu.OffCmdSN))
	assert.Equal(t, uint32(5), c.U32(pdu.OffExpSN))
	assert.Equal(t, byte(0x8a), c.CDB()[0])
	assert.Equal(t, byte(0x08), c.CDB()[1], "FUA")
	assert.Equal(t, uint64(100), binary.BigEndian.Uint64(c.CDB()[2:10]))
	assert.Len(t, out[0].data, 8192)
	d := out[1].h
	assert.Equal(t, pdu.OpDataOut, d.Opcode())
	assert.True(t, d.Final())
	assert.Equal(t, uint32(pdu.Reserved), d.U32(pdu.OffTTT))
	assert.Equal(t, uint32(8192), d.U32(pdu.OffOffset))
	assert.Equal(t, data[8192:16384], out[1].data)

	// The target asks for the rest in one R2T.
	h := targetPDU(pdu.OpR2T, tk.itt, 5, 10, 12)
	h.PutU32(pdu.OffTTT, 0x77)
	h.PutU32(pdu.OffOffset, 16384)
	h.PutU32(pdu.OffResidual, 24576)
	r, err := e.handle(&h, nil)
	require.NoError(t, err)
	require.Len(t, r.out, 3)
	for i, o := range r.out {
		assert.Equal(t, uint32(0x77), o.h.U32(pdu.OffTTT))
		assert.Equal(t, uint32(i), o.h.U32(pdu.OffDataSN))
		assert.Equal(t, uint32(16384+8192*i), o.h.U32(pdu.OffOffset))
		assert.Equal(t, i == 2, o.h.Final())
		assert.Equal(t, data[16384+8192*i:16384+8192*(i+1)], o.data)
	}

	resp := targetPDU(pdu.OpSCSIResp, tk.itt, 5, 11, 13)
	resp[1] = 0x80
	r, err = e.handle(&resp, nil)
	require.NoError(t, err)
	require.Equal(t, []*task{tk}, r.finished)
	assert.NoError(t, tk.err)
	assert.True(t, r.windowMoved)
	assert.Equal(t, uint32(6), e.expStatSN)
	assert.Empty(t, e.tasks)
}

func TestEngineReadReassemblyWithStatus(t *testing.T) {
	e := testEngine()
	buf := make([]byte, 3000)
	tk, out := e.start(read16(0, 6, buf))
	require.Len(t, out, 1)
	assert.Equal(t, byte(0xc1), out[0].h[1], "F, R, simple")
	for i, chunk := range []int{1000, 2000} {
		h := targetPDU(pdu.OpDataIn, tk.itt, 5, 11, 12)
		h.PutU32(pdu.OffDataSN, uint32(i))
		h.PutU32(pdu.OffOffset, uint32(1000*i))
		if i == 1 {
			h[1] = 0x81 // F and S
		}
		d := make([]byte, chunk)
		for j := range d {
			d[j] = byte(i + 1)
		}
		r, err := e.handle(&h, d)
		require.NoError(t, err)
		if i == 0 {
			assert.Empty(t, r.finished)
		} else {
			assert.Equal(t, []*task{tk}, r.finished)
		}
	}
	assert.NoError(t, tk.err)
	assert.Equal(t, 3000, tk.resp.N)
	assert.Equal(t, byte(1), buf[999])
	assert.Equal(t, byte(2), buf[1000])
}

func TestEngineDataInOutOfOrderIsAProtocolError(t *testing.T) {
	e := testEngine()
	tk, _ := e.start(read16(0, 2, make([]byte, 1024)))
	h := targetPDU(pdu.OpDataIn, tk.itt, 5, 11, 12)
	h.PutU32(pdu.OffOffset, 512)
	_, err := e.handle(&h, make([]byte, 512))
	assert.ErrorContains(t, err, "offset")
	h = targetPDU(pdu.OpDataIn, 999, 5, 11, 12)
	_, err = e.handle(&h, make([]byte, 512))
	assert.ErrorContains(t, err, "unknown")
}

func TestEngineCheckCondition(t *testing.T) {
	e := testEngine()
	tk, _ := e.start(read16(1<<40, 1, make([]byte, 512)))
	h := targetPDU(pdu.OpSCSIResp, tk.itt, 5, 11, 12)
	h[1], h[3] = 0x80, StatusCheckCondition
	sense := make([]byte, 2+18)
	binary.BigEndian.PutUint16(sense, 18)
	sense[2], sense[4], sense[14], sense[15] = 0x70, SenseIllegalRequest, 0x21, 0x00
	r, err := e.handle(&h, sense)
	require.NoError(t, err)
	require.Len(t, r.finished, 1)
	var se *SCSIError
	require.ErrorAs(t, tk.err, &se)
	assert.Equal(t, byte(SenseIllegalRequest), se.SenseKey)
	assert.Equal(t, byte(0x21), se.ASC)
	assert.Contains(t, se.Error(), "READ(16): CHECK CONDITION, sense key 0x5, ASC/ASCQ 0x21/0x00")

	// Descriptor format sense.
	se = &SCSIError{}
	se.parseSense([]byte{0x72, 0x06, 0x29, 0x01, 0, 0, 0, 0})
	assert.Equal(t, byte(SenseUnitAttention), se.SenseKey)
	assert.Equal(t, byte(0x29), se.ASC)
	assert.Equal(t, byte(0x01), se.ASCQ)
}

func TestEngineWindow(t *testing.T) {
	e := testEngine() // CmdSN 10, MaxCmdSN 12: three slots
	for range 3 {
		require.True(t, e.windowOpen())
		e.start(testUnitReady())
	}
	assert.False(t, e.windowOpen())
	// A stale MaxCmdSN is ignored, an invalid window too.
	h := targetPDU(pdu.OpNOPIn, pdu.Reserved, 5, 10, 11)
	h.PutU32(pdu.OffTTT, pdu.Reserved)
	r, err := e.handle(&h, nil)
	require.NoError(t, err)
	assert.False(t, r.windowMoved)
	h = targetPDU(pdu.OpNOPIn, pdu.Reserved, 5, 20, 13)
	h.PutU32(pdu.OffTTT, pdu.Reserved)
	_, err = e.handle(&h, nil)
	require.NoError(t, err)
	assert.False(t, e.windowOpen(), "MaxCmdSN below ExpCmdSN-1 is ignored")
	h = targetPDU(pdu.OpNOPIn, pdu.Reserved, 5, 11, 13)
	h.PutU32(pdu.OffTTT, pdu.Reserved)
	r, err = e.handle(&h, nil)
	require.NoError(t, err)
	assert.True(t, r.windowMoved)
	assert.True(t, e.windowOpen())
	assert.Equal(t, uint32(5), e.expStatSN, "an unsolicited NOP-In does not consume a StatSN")
}

func TestEnginePings(t *testing.T) {
	e := testEngine()
	// The target pings us: we answer with its TTT and data, immediately.
	h := targetPDU(pdu.OpNOPIn, pdu.Reserved, 5, 10, 12)
	h.PutU32(pdu.OffTTT, 0x1234)
	r, err := e.handle(&h, []byte("ping"))
	require.NoError(t, err)
	require.Len(t, r.out, 1)
	o := r.out[0]
	assert.Equal(t, pdu.OpNOPOut, o.h.Opcode())
	assert.True(t, o.h.Immediate())
	assert.Equal(t, uint32(pdu.Reserved), o.h.ITT())
	assert.Equal(t, uint32(0x1234), o.h.U32(pdu.OffTTT))
	assert.Equal(t, []byte("ping"), o.data)

	// Our ping: one at a time, answered by a NOP-In with its ITT.
	p, ok := e.ping()
	require.True(t, ok)
	assert.True(t, p.h.Immediate())
	assert.Equal(t, uint32(10), p.h.U32(pdu.OffCmdSN), "immediate: CmdSN not advanced")
	_, ok = e.ping()
	assert.False(t, ok)
	h = targetPDU(pdu.OpNOPIn, p.h.ITT(), 5, 10, 12)
	h.PutU32(pdu.OffTTT, pdu.Reserved)
	r, err = e.handle(&h, nil)
	require.NoError(t, err)
	assert.True(t, r.pingAnswered)
	assert.Equal(t, uint32(6), e.expStatSN)
	_, ok = e.ping()
	assert.True(t, ok)
}

func TestEngineRejectEndsCommand(t *testing.T) {
	e := testEngine()
	tk, out := e.start(testUnitReady())
	h := targetPDU(pdu.OpReject, pdu.Reserved, 5, 11, 12)
	h[2] = 0x09
	r, err := e.handle(&h, out[0].h[:])
	require.NoError(t, err)
	require.Len(t, r.finished, 1)
	var re *RejectError
	require.ErrorAs(t, tk.err, &re)
	assert.Equal(t, byte(0x09), re.Reason)
}

func TestEngineFailAll(t *testing.T) {
	e := testEngine()
	a, _ := e.start(testUnitReady())
	b, _ := e.start(read16(0, 1, make([]byte, 512)))
	failed := e.failAll(lost("test"))
	assert.ElementsMatch(t, []*task{a, b}, failed)
	assert.ErrorIs(t, a.err, ErrConnectionLost)
	assert.Empty(t, e.tasks)
}
