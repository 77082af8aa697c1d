package iscsi

import (
	"context"

	"github.com/mhcodi/mhcodi/targetd/scsi"
)

// Adapt makes a scsi.Target the SCSITarget of an exported iSCSI target.
func Adapt(t *scsi.Target) SCSITarget { return scsiTarget{t} }

type scsiTarget struct{ t *scsi.Target }

func (a scsiTarget) Execute(ctx context.Context, cmd *scsi.Command) (scsi.Result, error) {
	return a.t.Execute(ctx, cmd)
}
func (a scsiTarget) AbortTask(lun uint64, n scsi.Nexus, tag uint32) bool {
	return a.t.AbortTask(n, lun, tag)
}
func (a scsiTarget) AbortTaskSet(lun uint64, n scsi.Nexus) { a.t.AbortTaskSet(n, lun) }
func (a scsiTarget) ResetLU(lun uint64, by scsi.Nexus) bool {
	lu := a.t.LU(lun)
	if lu == nil {
		return false
	}
	lu.Reset(by)
	return true
}
func (a scsiTarget) ResetTarget(by scsi.Nexus) { a.t.Reset(by) }
func (a scsiTarget) NexusLost(n scsi.Nexus)    { a.t.NexusLost(n) }
func (a scsiTarget) Release(res *scsi.Result)  { a.t.Release(res) }
func (a scsiTarget) HasLUN(lun uint64) bool    { return a.t.LU(lun) != nil }
