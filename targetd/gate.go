package targetd

import (
	"context"

	"github.com/mhcodi/mhcodi/targetd/iscsi"
	"github.com/mhcodi/mhcodi/targetd/scsi"
)

// fencedTarget checks every command that carries data to the target (a
// write, UNMAP, PERSISTENT RESERVE OUT…) against the target's fence at
// the moment it starts: an initiator the target is fenced away from gets
// RESERVATION CONFLICT, even on a session that logged in before the fence
// and has not been dropped yet. Admitted writes are recorded in the write
// log with the epoch they were admitted at, so the log proves what the
// fence enforces: one writer per epoch. (Fence drops the other sessions
// and waits for their running commands before it answers, so no write
// admitted under the old epoch lands after the new owner's first.)
type fencedTarget struct {
	iscsi.SCSITarget
	iqn   string
	fence *fenceStore
	wlog  *writeLog
}

func (f fencedTarget) Execute(ctx context.Context, cmd *scsi.Command) (scsi.Result, error) {
	if cmd.Write {
		st := f.fence.get(f.iqn)
		if st.Owner != "" && st.Owner != cmd.Nexus.InitiatorName {
			return scsi.Result{Status: scsi.StatusReservationConflict}, nil
		}
		f.wlog.record(f.iqn, cmd.Nexus.InitiatorName, st.Epoch)
	}
	return f.SCSITarget.Execute(ctx, cmd)
}
