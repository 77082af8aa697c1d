package scsi

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// blockedWrite starts a WRITE on a gateDev fixture and waits until it is
// inside the device.
func blockedWrite(t *testing.T, f *fixture, gd *gateDev, n Nexus, tag uint32) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := f.tgt.Execute(context.Background(), &Command{Nexus: n, Tag: tag, CDB: rw10c(opWrite10, 0, 1, 1), Data: fill(512, 1)})
		done <- err
	}()
	<-gd.entered
	return done
}

func newGateFixture(t *testing.T) (*fixture, *gateDev) {
	gd := &gateDev{MemDev: NewMemDev(testBlocks*512, true), entered: make(chan struct{}, 4), release: make(chan struct{})}
	return newFixture(t, func(c *LUConfig) { c.Dev = gd }), gd
}

func TestAbortTask(t *testing.T) {
	f, gd := newGateFixture(t)
	done := blockedWrite(t, f, gd, nexusA, 42)
	assert.False(t, f.tgt.AbortTask(nexusA, 0, 41), "unknown tag")
	assert.False(t, f.tgt.AbortTask(nexusB, 0, 42), "other nexus")
	aborted := make(chan bool)
	go func() { aborted <- f.tgt.AbortTask(nexusA, 0, 42) }()
	select {
	case <-aborted:
		t.Fatal("ABORT TASK returned before the task finished")
	case <-time.After(30 * time.Millisecond):
	}
	close(gd.release)
	assert.True(t, <-aborted)
	assert.True(t, errors.Is(<-done, ErrAborted))
	assert.False(t, f.tgt.AbortTask(nexusA, 0, 42), "gone")
}

func TestAbortTaskSetAndReset(t *testing.T) {
	f, gd := newGateFixture(t)
	f.good(nexusB, tur(), nil)
	doneA := blockedWrite(t, f, gd, nexusA, 1)
	doneB := blockedWrite(t, f, gd, nexusB, 1)
	go func() {
		time.Sleep(20 * time.Millisecond)
		close(gd.release)
	}()
	f.tgt.AbortTaskSet(nexusA, 0)
	assert.True(t, errors.Is(<-doneA, ErrAborted))
	assert.NoError(t, <-doneB, "other nexus untouched")

	gd.release = make(chan struct{})
	doneA = blockedWrite(t, f, gd, nexusA, 2)
	doneB = blockedWrite(t, f, gd, nexusB, 2)
	go func() {
		time.Sleep(20 * time.Millisecond)
		close(gd.release)
	}()
	f.lu.Reset(nexusA)
	assert.True(t, errors.Is(<-doneA, ErrAborted))
	assert.True(t, errors.Is(<-doneB, ErrAborted))
	requireSense(t, f.do(nexusB, tur(), nil), SenseUnitAttention, ascBusDeviceReset)
	requireSense(t, f.do(nexusA, tur(), nil), SenseUnitAttention, ascBusDeviceReset)
	f.good(nexusA, tur(), nil)
}

// TestLUNResetUnitAttentionOnEveryNexus: after a LOGICAL UNIT RESET every
// nexus that knows the LU sees BUS DEVICE RESET FUNCTION OCCURRED once,
// the one that sent the reset included (SAM-5; libiscsi's
// MultipathIO.Reset), even when the reset was the first thing it sent.
// INQUIRY neither reports nor clears it.
func TestLUNResetUnitAttentionOnEveryNexus(t *testing.T) {
	f := newFixture(t)
	nexusC := nexusB
	nexusC.ISID = "0x400001370002"
	f.good(nexusA, tur(), nil)
	f.good(nexusB, tur(), nil)

	f.lu.Reset(nexusA)
	for _, n := range []Nexus{nexusA, nexusB} {
		f.good(n, inquiryCDB(false, 0, 96), nil)
		requireSense(t, f.do(n, tur(), nil), SenseUnitAttention, ascBusDeviceReset)
		f.good(n, tur(), nil)
	}

	f.lu.Reset(nexusC)
	for _, n := range []Nexus{nexusC, nexusA, nexusB} {
		requireSense(t, f.do(n, tur(), nil), SenseUnitAttention, ascBusDeviceReset)
		f.good(n, tur(), nil)
	}

	// A target warm reset resets every LU the same way.
	f.tgt.Reset(nexusB)
	for _, n := range []Nexus{nexusB, nexusA, nexusC} {
		requireSense(t, f.do(n, tur(), nil), SenseUnitAttention, ascBusDeviceReset)
		f.good(n, tur(), nil)
	}
}

func TestContextCancel(t *testing.T) {
	f, gd := newGateFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := f.tgt.Execute(ctx, &Command{Nexus: nexusA, Tag: 9, CDB: rw10c(opWrite10, 0, 1, 1), Data: fill(512, 1)})
		done <- err
	}()
	<-gd.entered
	cancel()
	close(gd.release)
	assert.True(t, errors.Is(<-done, ErrAborted))
	_, err := f.tgt.Execute(ctx, &Command{Nexus: nexusA, Tag: 10, CDB: tur()})
	assert.True(t, errors.Is(err, ErrAborted))
}

func TestNexusLostAbortsTasks(t *testing.T) {
	f, gd := newGateFixture(t)
	done := blockedWrite(t, f, gd, nexusA, 5)
	go func() {
		time.Sleep(20 * time.Millisecond)
		close(gd.release)
	}()
	f.tgt.NexusLost(nexusA)
	assert.True(t, errors.Is(<-done, ErrAborted))
}

// TestRemoveLU: commands to a removed LUN fail as for any absent LUN.
func TestRemoveLU(t *testing.T) {
	f := newFixture(t)
	require.NotNil(t, f.tgt.RemoveLU(0))
	requireSense(t, f.do(nexusA, tur(), nil), SenseIllegalRequest, ascLUNotSupported)
	require.NoError(t, f.tgt.AddLU(1, f.lu))
	assert.Equal(t, []uint64{1}, f.tgt.LUNs())
}

// TestTwoTargets: each target has its own LUs and buffers.
func TestTwoTargets(t *testing.T) {
	a, b := newFixture(t), newFixture(t)
	a.good(nexusA, rw10c(opWrite10, 0, 0, 1), fill(512, 'a'))
	res := b.good(nexusA, rw10c(opRead10, 0, 0, 1), nil)
	assert.Equal(t, make([]byte, 512), res.Data)
	assert.NotSame(t, a.tgt.pool, b.tgt.pool)
	require.Error(t, b.tgt.AddLU(1, a.lu))
}

func TestClearTaskSet(t *testing.T) {
	f, gd := newGateFixture(t)
	f.good(nexusB, tur(), nil)
	doneA := blockedWrite(t, f, gd, nexusA, 1)
	doneB := blockedWrite(t, f, gd, nexusB, 1)
	go func() {
		time.Sleep(20 * time.Millisecond)
		close(gd.release)
	}()
	require.True(t, f.tgt.ClearTaskSet(nexusA, 0))
	assert.False(t, f.tgt.ClearTaskSet(nexusA, 9))
	assert.True(t, errors.Is(<-doneA, ErrAborted))
	assert.True(t, errors.Is(<-doneB, ErrAborted))
	requireSense(t, f.do(nexusB, tur(), nil), SenseUnitAttention, ascCommandsCleared)
	f.good(nexusA, tur(), nil)
}
