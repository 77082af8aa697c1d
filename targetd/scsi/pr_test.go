package scsi

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func prOutCDB(sa, typ byte) []byte {
	c := make([]byte, 10)
	c[0], c[1], c[2] = opPROut, sa, typ
	be32put(c[5:], prOutParamLen)
	return c
}

func prOutData(key, saKey uint64) []byte {
	p := make([]byte, prOutParamLen)
	be64put(p, key)
	be64put(p[8:], saKey)
	return p
}

func prInCDB(sa byte) []byte {
	c := make([]byte, 10)
	c[0], c[1] = opPRIn, sa
	be16put(c[7:], 16384)
	return c
}

func (f *fixture) prOut(n Nexus, sa, typ byte, key, saKey uint64) Result {
	f.t.Helper()
	return f.do(n, prOutCDB(sa, typ), prOutData(key, saKey))
}

func (f *fixture) readKeys(n Nexus) (gen uint32, keys []uint64) {
	f.t.Helper()
	res := f.good(n, prInCDB(saReadKeys), nil)
	require.EqualValues(f.t, len(res.Data)-8, be32(res.Data[4:]))
	for p := res.Data[8:]; len(p) >= 8; p = p[8:] {
		keys = append(keys, be64(p))
	}
	return be32(res.Data), keys
}

func (f *fixture) readReservation(n Nexus) (reserved bool, key uint64, typ byte) {
	f.t.Helper()
	res := f.good(n, prInCDB(saReadResv), nil)
	if be32(res.Data[4:]) == 0 {
		return false, 0, 0
	}
	return true, be64(res.Data[8:]), res.Data[8+13] & 0x0f
}

func TestPRRegister(t *testing.T) {
	f := newFixture(t)
	gen0, keys := f.readKeys(nexusA)
	assert.Empty(t, keys)
	requireGood(t, f.prOut(nexusA, saRegisterIgnore, 0, 0, 0x1111))
	gen, keys := f.readKeys(nexusA)
	assert.Equal(t, []uint64{0x1111}, keys)
	assert.Equal(t, gen0+1, gen)

	// Re-register with a wrong reservation key: conflict.
	requireConflict(t, f.prOut(nexusA, saRegister, 0, 0, 0x1112))
	// Register while not registered with a non-zero key: conflict.
	requireConflict(t, f.prOut(nexusB, saRegister, 0, 0x5, 0x6))
	// Change key, then unregister.
	requireGood(t, f.prOut(nexusA, saRegister, 0, 0x1111, 0x2222))
	_, keys = f.readKeys(nexusA)
	assert.Equal(t, []uint64{0x2222}, keys)
	requireGood(t, f.prOut(nexusA, saRegister, 0, 0x2222, 0))
	_, keys = f.readKeys(nexusA)
	assert.Empty(t, keys)

	// Bad parameter lists.
	c := prOutCDB(saRegister, 0)
	be32put(c[5:], 20)
	requireSense(t, f.do(nexusA, c, make([]byte, 20)), SenseIllegalRequest, ascParamListLengthError)
	for _, flag := range []byte{0x01, 0x04, 0x08} { // APTPL, ALL_TG_PT, SPEC_I_PT
		p := prOutData(0, 1)
		p[20] = flag
		requireSense(t, f.do(nexusA, prOutCDB(saRegisterIgnore, 0), p), SenseIllegalRequest, ascInvalidFieldInParamList)
	}
	requireSense(t, f.prOut(nexusA, saRegisterAndMove, 0, 0, 1), SenseIllegalRequest, ascInvalidFieldInCDB)
	requireSense(t, f.do(nexusA, prInCDB(0x07), nil), SenseIllegalRequest, ascInvalidFieldInCDB)
}

func TestPRReportCapabilities(t *testing.T) {
	f := newFixture(t)
	res := f.good(nexusA, prInCDB(saReportCaps), nil)
	require.Len(t, res.Data, 8)
	assert.EqualValues(t, 8, be16(res.Data))
	assert.Zero(t, res.Data[2]&0x01, "PTPL_C: APTPL not supported")
	assert.Equal(t, byte(0x80), res.Data[3]&0x80, "TMV")
	assert.EqualValues(t, 0xea01, be16(res.Data[4:]), "all six types")
}

// TestPRReserveAccess checks the conflict table for every type with a
// registered and an unregistered second nexus, as libiscsi's
// ProutReserve.Access* tests do.
func TestPRReserveAccess(t *testing.T) {
	type access struct{ regRead, regWrite, unregRead, unregWrite bool }
	for typ, want := range map[byte]access{
		prExclusiveAccess:   {false, false, false, false},
		prWriteExclusive:    {true, false, true, false},
		prExclusiveAccessRO: {true, true, false, false},
		prWriteExclusiveRO:  {true, true, true, false},
		prExclusiveAccessAR: {true, true, false, false},
		prWriteExclusiveAR:  {true, true, true, false},
	} {
		f := newFixture(t)
		const key = 0xabc // both nexuses use one key, as libiscsi's rand_key often does
		requireGood(t, f.prOut(nexusA, saRegisterIgnore, 0, 0, key))
		requireGood(t, f.prOut(nexusB, saRegisterIgnore, 0, 0, key))
		requireGood(t, f.prOut(nexusA, saReserve, typ, key, 0))
		// Re-reserving the same type is a no-op; another type conflicts.
		requireGood(t, f.prOut(nexusA, saReserve, typ, key, 0))
		reserved, rkey, rtyp := f.readReservation(nexusB)
		assert.True(t, reserved)
		assert.Equal(t, typ, rtyp)
		if allRegistrants(typ) {
			assert.Zero(t, rkey)
		} else {
			assert.EqualValues(t, key, rkey)
			requireConflict(t, f.prOut(nexusB, saReserve, typ, key, 0))
		}

		read := func(n Nexus) bool { return f.do(n, rw10c(opRead10, 0, 1, 1), nil).Status == StatusGood }
		write := func(n Nexus) bool {
			res := f.do(n, rw10c(opWrite10, 0, 1, 1), make([]byte, 512))
			if res.Status != StatusGood {
				requireConflict(t, res)
			}
			return res.Status == StatusGood
		}
		assert.True(t, read(nexusA), "type %d holder read", typ)
		assert.True(t, write(nexusA), "type %d holder write", typ)
		assert.Equal(t, want.regRead, read(nexusB), "type %d registered read", typ)
		assert.Equal(t, want.regWrite, write(nexusB), "type %d registered write", typ)
		// Commands that never conflict.
		f.good(nexusB, tur(), nil)
		f.good(nexusB, inquiryCDB(false, 0, 96), nil)
		f.good(nexusB, []byte{opReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil)

		requireGood(t, f.prOut(nexusB, saRegister, 0, key, 0))
		assert.Equal(t, want.unregRead, read(nexusB), "type %d unregistered read", typ)
		assert.Equal(t, want.unregWrite, write(nexusB), "type %d unregistered write", typ)

		// RELEASE with the wrong type, then the right one.
		wrong := byte(prWriteExclusive)
		if typ == prWriteExclusive {
			wrong = prExclusiveAccess
		}
		requireSense(t, f.prOut(nexusA, saRelease, wrong, key, 0), SenseIllegalRequest, ascInvalidReleaseOfPR)
		requireGood(t, f.prOut(nexusA, saRelease, typ, key, 0))
		reserved, _, _ = f.readReservation(nexusA)
		assert.False(t, reserved)
		assert.True(t, write(nexusB))
		requireGood(t, f.prOut(nexusA, saRegister, 0, key, 0))
	}
}

// TestPRReserveOwnership: unregistering the holder releases a
// single-holder reservation, but not an all-registrants one while other
// registrants remain.
func TestPRReserveOwnership(t *testing.T) {
	for _, typ := range []byte{prExclusiveAccess, prWriteExclusive, prExclusiveAccessRO, prWriteExclusiveRO, prExclusiveAccessAR, prWriteExclusiveAR} {
		f := newFixture(t)
		f.clearUAs(nexusB)
		requireGood(t, f.prOut(nexusA, saRegisterIgnore, 0, 0, 1))
		requireGood(t, f.prOut(nexusB, saRegisterIgnore, 0, 0, 2))
		requireGood(t, f.prOut(nexusA, saReserve, typ, 1, 0))
		requireGood(t, f.prOut(nexusA, saRegister, 0, 1, 0))
		reserved, _, _ := f.readReservation(nexusA)
		assert.Equal(t, allRegistrants(typ), reserved, "type %d", typ)
		if allRegistrants(typ) {
			requireGood(t, f.prOut(nexusB, saRelease, typ, 2, 0))
		} else if typ == prExclusiveAccessRO || typ == prWriteExclusiveRO {
			requireSense(t, f.do(nexusB, tur(), nil), SenseUnitAttention, ascReservationsReleased)
		}
		requireGood(t, f.prOut(nexusB, saRegister, 0, 2, 0))
		_, keys := f.readKeys(nexusA)
		assert.Empty(t, keys)
	}
}

func TestPRClear(t *testing.T) {
	f := newFixture(t)
	f.good(nexusB, tur(), nil)
	requireGood(t, f.prOut(nexusA, saRegisterIgnore, 0, 0, 7))
	requireGood(t, f.prOut(nexusB, saRegisterIgnore, 0, 0, 8))
	gen, _ := f.readKeys(nexusA)
	requireGood(t, f.prOut(nexusA, saReserve, prExclusiveAccess, 7, 0))
	requireConflict(t, f.prOut(nexusB, saClear, 0, 9, 0))
	requireGood(t, f.prOut(nexusA, saClear, 0, 7, 0))
	gen2, keys := f.readKeys(nexusA)
	assert.Empty(t, keys)
	assert.Equal(t, gen+1, gen2, "CLEAR bumps the generation, RESERVE does not")
	reserved, _, _ := f.readReservation(nexusA)
	assert.False(t, reserved)
	requireSense(t, f.do(nexusB, tur(), nil), SenseUnitAttention, ascReservationsPreempted)
}

func TestPRPreempt(t *testing.T) {
	f := newFixture(t)
	requireGood(t, f.prOut(nexusA, saRegisterIgnore, 0, 0, 0x10))
	requireGood(t, f.prOut(nexusB, saRegisterIgnore, 0, 0, 0x10))
	gen, _ := f.readKeys(nexusA)
	// No reservation: remove the registrations of the key, not our own.
	requireGood(t, f.prOut(nexusB, saPreempt, prExclusiveAccess, 0x10, 0x10))
	f.clearUAs(nexusA)
	gen2, keys := f.readKeys(nexusA)
	assert.Equal(t, []uint64{0x10}, keys)
	assert.Equal(t, gen+1, gen2)
	requireConflict(t, f.prOut(nexusA, saRegister, 0, 0x10, 0x11)) // A is gone
	requireConflict(t, f.prOut(nexusB, saPreempt, prExclusiveAccess, 0x10, 0x99))
	requireSense(t, f.prOut(nexusB, saPreempt, prExclusiveAccess, 0x10, 0), SenseIllegalRequest, ascInvalidFieldInParamList)

	// Preempt the holder: the reservation passes to the preempter.
	requireGood(t, f.prOut(nexusA, saRegisterIgnore, 0, 0, 0x20))
	requireGood(t, f.prOut(nexusA, saReserve, prWriteExclusive, 0x20, 0))
	requireConflict(t, f.do(nexusB, rw10c(opWrite10, 0, 0, 1), make([]byte, 512)))
	requireGood(t, f.prOut(nexusB, saPreempt, prExclusiveAccess, 0x10, 0x20))
	reserved, key, typ := f.readReservation(nexusB)
	assert.True(t, reserved)
	assert.EqualValues(t, 0x10, key)
	assert.EqualValues(t, prExclusiveAccess, typ)
	requireSense(t, f.do(nexusA, tur(), nil), SenseUnitAttention, ascRegistrationsPreempted)
	requireConflict(t, f.do(nexusA, rw10c(opRead10, 0, 0, 1), nil))
	f.good(nexusB, rw10c(opWrite10, 0, 0, 1), make([]byte, 512))
}

// gateDev blocks WriteAt until released, to hold a task in flight.
type gateDev struct {
	*MemDev
	entered chan struct{}
	release chan struct{}
}

func (g *gateDev) WriteAt(p []byte, off int64) (int, error) {
	g.entered <- struct{}{}
	<-g.release
	return g.MemDev.WriteAt(p, off)
}

// TestPRPreemptAndAbort: PREEMPT AND ABORT aborts the preempted nexus's
// task that is blocked in the device, and does not answer before that
// task has finished, so no write of the preempted initiator can land
// after the preempt completed.
func TestPRPreemptAndAbort(t *testing.T) {
	gd := &gateDev{MemDev: NewMemDev(testBlocks*512, true), entered: make(chan struct{}, 1), release: make(chan struct{})}
	f := newFixture(t, func(c *LUConfig) { c.Dev = gd })
	requireGood(t, f.prOut(nexusA, saRegisterIgnore, 0, 0, 0xa))
	requireGood(t, f.prOut(nexusB, saRegisterIgnore, 0, 0, 0xb))
	requireGood(t, f.prOut(nexusB, saReserve, prWriteExclusiveRO, 0xb, 0))

	bDone := make(chan error, 1)
	go func() {
		_, err := f.exec(context.Background(), nexusB, 0, rw10c(opWrite10, 0, 3, 1), fill(512, 'B'))
		bDone <- err
	}()
	<-gd.entered

	aDone := make(chan Result, 1)
	go func() { aDone <- f.prOut(nexusA, saPreemptAbort, prWriteExclusiveRO, 0xa, 0xb) }()
	select {
	case <-aDone:
		t.Fatal("PREEMPT AND ABORT answered while the preempted task was still running")
	case <-time.After(50 * time.Millisecond):
	}
	close(gd.release)
	require.True(t, errors.Is(<-bDone, ErrAborted), "the blocked task is aborted")
	requireGood(t, <-aDone)

	_, keys := f.readKeys(nexusA)
	assert.Equal(t, []uint64{0xa}, keys)
	requireSense(t, f.do(nexusB, tur(), nil), SenseUnitAttention, ascRegistrationsPreempted)
	go func() { <-gd.entered }()
	requireConflict(t, f.do(nexusB, rw10c(opWrite10, 0, 3, 1), fill(512, 'C')))
}

func TestPRReadFullStatus(t *testing.T) {
	f := newFixture(t)
	requireGood(t, f.prOut(nexusA, saRegisterIgnore, 0, 0, 0x77))
	requireGood(t, f.prOut(nexusA, saReserve, prWriteExclusive, 0x77, 0))
	res := f.good(nexusA, prInCDB(saReadFullStatus), nil)
	d := res.Data
	require.EqualValues(t, len(d)-8, be32(d[4:]))
	desc := d[8:]
	assert.EqualValues(t, 0x77, be64(desc))
	assert.Equal(t, byte(1), desc[12], "R_HOLDER")
	assert.Equal(t, byte(prWriteExclusive), desc[13])
	tidLen := be32(desc[20:])
	tid := desc[24 : 24+tidLen]
	assert.Equal(t, byte(0x45), tid[0])
	assert.Contains(t, string(tid), nexusA.InitiatorPort())
	assert.Zero(t, tidLen%4)
}

func reserve6() []byte { return []byte{opReserve6, 0, 0, 0, 0, 0} }
func release6() []byte { return []byte{opRelease6, 0, 0, 0, 0, 0} }

func TestReserve6(t *testing.T) {
	f := newFixture(t)
	f.good(nexusA, reserve6(), nil)
	f.good(nexusA, reserve6(), nil)
	requireConflict(t, f.do(nexusB, reserve6(), nil))
	f.good(nexusB, release6(), nil) // no-op
	f.good(nexusA, []byte{opModeSense6, 0, pageAllPages, 0, 255, 0}, nil)
	requireConflict(t, f.do(nexusB, []byte{opModeSense6, 0, pageAllPages, 0, 255, 0}, nil))
	requireConflict(t, f.do(nexusB, tur(), nil))
	requireConflict(t, f.do(nexusB, prInCDB(saReadKeys), nil))
	f.good(nexusB, inquiryCDB(false, 0, 96), nil)
	f.good(nexusA, release6(), nil)
	f.good(nexusB, reserve6(), nil)
	f.good(nexusB, []byte{opRelease10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil)

	// A LUN reset releases it; both nexuses see the reset.
	f.good(nexusA, []byte{opReserve10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil)
	f.lu.Reset(nexusA)
	requireSense(t, f.do(nexusA, tur(), nil), SenseUnitAttention, ascBusDeviceReset)
	requireSense(t, f.do(nexusB, reserve6(), nil), SenseUnitAttention, ascBusDeviceReset)
	f.good(nexusB, reserve6(), nil)
	// Nexus loss releases it too.
	f.tgt.NexusLost(nexusB)
	f.good(nexusA, reserve6(), nil)
	// Target warm reset.
	f.tgt.Reset(nexusB)
	requireSense(t, f.do(nexusB, reserve6(), nil), SenseUnitAttention, ascBusDeviceReset)
	f.good(nexusB, reserve6(), nil)
	f.good(nexusB, release6(), nil)

	// A persistent reservation wins over RESERVE(6) (CRH=1).
	f.clearUAs(nexusA)
	requireGood(t, f.prOut(nexusA, saRegisterIgnore, 0, 0, 1))
	requireGood(t, f.prOut(nexusA, saReserve, prWriteExclusive, 1, 0))
	requireConflict(t, f.do(nexusB, reserve6(), nil))
	f.good(nexusA, reserve6(), nil)
}
