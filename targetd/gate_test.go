package targetd

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/targetd/controlapi"
	"github.com/mhcodi/mhcodi/targetd/iscsi"
	"github.com/mhcodi/mhcodi/targetd/scsi"
)

// countingTarget executes nothing and counts what reached it.
type countingTarget struct {
	iscsi.SCSITarget
	n int
}

func (c *countingTarget) Execute(context.Context, *scsi.Command) (scsi.Result, error) {
	c.n++
	return scsi.Result{Status: scsi.StatusGood}, nil
}

func TestFencedTargetAdmitsOnlyTheOwner(t *testing.T) {
	dir := t.TempDir()
	fs, err := openFenceStore(filepath.Join(dir, "fence.json"))
	require.NoError(t, err)
	wl, err := openWriteLog(filepath.Join(dir, "writes.jsonl"))
	require.NoError(t, err)
	inner := &countingTarget{}
	const iqn, a, b = "iqn.2026-11.org.mhcodi:t.node-b.g.root", "iqn.x:t.node-a.initiator", "iqn.x:t.node-b.initiator"
	ft := fencedTarget{SCSITarget: inner, iqn: iqn, fence: fs, wlog: wl}
	write := func(ini string) scsi.Status {
		res, err := ft.Execute(t.Context(), &scsi.Command{Nexus: scsi.Nexus{InitiatorName: ini}, Write: true, CDB: []byte{0x2a}})
		require.NoError(t, err)
		return res.Status
	}
	assert.Equal(t, scsi.StatusGood, write(a), "not fenced yet: every node writes")
	require.NoError(t, fs.set(iqn, controlapi.FenceState{Owner: b, Epoch: 2}))
	assert.Equal(t, scsi.StatusReservationConflict, write(a), "a session of the old owner that was not dropped yet still cannot write")
	assert.Equal(t, scsi.StatusGood, write(b))
	res, err := ft.Execute(t.Context(), &scsi.Command{Nexus: scsi.Nexus{InitiatorName: a}, Read: true, CDB: []byte{0x28}})
	require.NoError(t, err)
	assert.Equal(t, scsi.StatusGood, res.Status, "reads are not fenced")
	assert.Equal(t, 3, inner.n)
	require.NoError(t, wl.Close())

	recs, err := controlapi.ReadWriteLog(filepath.Join(dir, "writes.jsonl"))
	require.NoError(t, err)
	require.Len(t, recs, 2, "one record per initiator and epoch admitted")
	assert.Equal(t, a, recs[0].Initiator)
	assert.EqualValues(t, 0, recs[0].Epoch)
	assert.Equal(t, b, recs[1].Initiator)
	assert.EqualValues(t, 2, recs[1].Epoch)
}
