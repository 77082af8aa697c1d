package scsi

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
)

// TargetOptions tune a Target.
type TargetOptions struct {
	// StrictDataOut changes what happens when a command carries less
	// Data-Out than its CDB names (the initiator's expected data transfer
	// length was too small). By default the layer behaves as libiscsi's
	// iSCSIResiduals suite requires (and tgt does): it writes the whole
	// logical blocks that did arrive, never a partial one and never
	// anything beyond the CDB's range, and returns GOOD; the transport
	// reports the residual overflow. With StrictDataOut it writes nothing
	// and returns CHECK CONDITION, ILLEGAL REQUEST, INVALID FIELD IN
	// COMMAND INFORMATION UNIT.
	StrictDataOut bool
}

// Target is the set of logical units behind one iSCSI target, and the
// Executor the transport calls. It answers REPORT LUNS itself and
// commands to LUNs it does not have.
type Target struct {
	opts TargetOptions
	pool *BufPool

	mu  sync.Mutex                     // serializes AddLU/RemoveLU
	lus atomic.Pointer[map[uint64]*LU] // copy-on-write: lookups take no lock
}

// maxLUN is the largest LUN of SAM-5 flat space addressing.
const maxLUN = 16383

// NewTarget returns a Target without LUs.
func NewTarget(opts TargetOptions) *Target {
	t := &Target{opts: opts, pool: NewBufPool()}
	m := map[uint64]*LU{}
	t.lus.Store(&m)
	return t
}

// AddLU adds lu as LUN lun. An LU belongs to one target only. Other LUs
// raise REPORTED LUNS DATA HAS CHANGED.
func (t *Target) AddLU(lun uint64, lu *LU) error {
	if lun > maxLUN {
		return fmt.Errorf("scsi: add LUN %d: above %d", lun, maxLUN)
	}
	if lu == nil {
		return errors.New("scsi: add LUN: nil LU")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := *t.lus.Load()
	if _, ok := cur[lun]; ok {
		return fmt.Errorf("scsi: add LUN %d: already present", lun)
	}
	if !lu.attached.CompareAndSwap(false, true) {
		return fmt.Errorf("scsi: add LUN %d: LU already belongs to a target", lun)
	}
	m := maps.Clone(cur)
	m[lun] = lu
	t.lus.Store(&m)
	for _, other := range cur {
		other.notifyLUNsChanged()
	}
	return nil
}

// RemoveLU removes LUN lun and returns its LU (nil if absent). Its tasks in
// flight are aborted and waited for; other LUs raise REPORTED LUNS DATA
// HAS CHANGED.
func (t *Target) RemoveLU(lun uint64) *LU {
	t.mu.Lock()
	cur := *t.lus.Load()
	lu, ok := cur[lun]
	if !ok {
		t.mu.Unlock()
		return nil
	}
	m := maps.Clone(cur)
	delete(m, lun)
	t.lus.Store(&m)
	t.mu.Unlock()

	ms := lu.tasks.abortWhere(func(taskKey) bool { return true })
	lu.tasks.wait(ms, nil)
	lu.attached.Store(false)
	for _, other := range m {
		other.notifyLUNsChanged()
	}
	return lu
}

// LU returns the LU at lun, or nil.
func (t *Target) LU(lun uint64) *LU { return (*t.lus.Load())[lun] }

// LUNs returns the LUNs in ascending order.
func (t *Target) LUNs() []uint64 {
	return slices.Sorted(maps.Keys(*t.lus.Load()))
}

// Execute runs one SCSI command; it implements Executor.
//
// Contract for the transport:
//   - Data-In: send Result.Data[:min(len(Data), cmd.ExpectedLen)], then call
//     Release. Residuals come from Result.TransferLen (see Result).
//   - CHECK CONDITION carries fixed-format sense data in Result.Sense.
//   - ErrAborted (no Result): the task was aborted by AbortTask,
//     AbortTaskSet, Reset, NexusLost, PREEMPT AND ABORT or ctx; send no
//     status for it.
//   - Unit attentions are reported by the layer itself (CHECK CONDITION,
//     UNIT ATTENTION) on the next command of each nexus.
//   - Commands may run concurrently, also for one nexus; the transport
//     enforces ordering (CmdSN, ORDERED and HEAD OF QUEUE attributes) if it
//     wants it.
func (t *Target) Execute(ctx context.Context, cmd *Command) (Result, error) {
	if len(cmd.CDB) == 0 {
		return invalidOpcode(), nil
	}
	lu := (*t.lus.Load())[cmd.LUN]
	switch {
	case cmd.CDB[0] == opReportLUNs:
		return t.reportLUNs(cmd, lu), nil
	case lu == nil:
		return t.absentLUN(cmd), nil
	}
	return lu.execute(ctx, cmd, t.pool, t.opts.StrictDataOut)
}

// Release returns the Data-In buffer of res to the target's pool. The
// transport calls it once the Data-In PDUs that point into res.Data have
// been written to the socket; res.Data must not be used afterwards. Calling
// it for a result without a pooled buffer (or twice with the same *Result)
// is harmless.
func (t *Target) Release(res *Result) {
	if res.pooled != nil {
		t.pool.Put(res.pooled)
		res.pooled = nil
		res.Data = nil
	}
}

// Reset performs a target warm reset (TARGET WARM RESET task management
// function): every LU is reset as by a LOGICAL UNIT RESET from nexus by.
func (t *Target) Reset(by Nexus) {
	var wg sync.WaitGroup
	for _, lu := range *t.lus.Load() {
		wg.Go(func() { lu.Reset(by) })
	}
	wg.Wait()
}

// NexusLost tells every LU that nexus n is gone (see LU.NexusLost).
func (t *Target) NexusLost(n Nexus) {
	for _, lu := range *t.lus.Load() {
		lu.NexusLost(n)
	}
}

// AbortTaskSet aborts every task of nexus n on LUN lun (see
// LU.AbortTaskSet); it does nothing for an absent LUN.
func (t *Target) AbortTaskSet(n Nexus, lun uint64) {
	if lu := t.LU(lun); lu != nil {
		lu.AbortTaskSet(n)
	}
}

// ClearTaskSet clears the task set of LUN lun (see LU.ClearTaskSet); it
// returns false for an absent LUN.
func (t *Target) ClearTaskSet(by Nexus, lun uint64) bool {
	if lu := t.LU(lun); lu != nil {
		lu.ClearTaskSet(by)
		return true
	}
	return false
}

// AbortTask aborts task tag of nexus n on LUN lun (see LU.AbortTask).
func (t *Target) AbortTask(n Nexus, lun uint64, tag uint32) bool {
	if lu := t.LU(lun); lu != nil {
		return lu.AbortTask(n, tag)
	}
	return false
}

// reportLUNs answers REPORT LUNS (SPC-4 6.33) for any addressed LUN,
// including absent ones: it is how an initiator finds the LUs.
func (t *Target) reportLUNs(cmd *Command, lu *LU) Result {
	cdb := cmd.CDB
	if len(cdb) < 12 {
		return invalidOpcode()
	}
	alloc := be32(cdb[6:])
	if alloc < 16 {
		return invalidCDBField(6, -1)
	}
	var luns []uint64
	switch cdb[2] {
	case 0x00, 0x02:
		luns = t.LUNs()
	case 0x01: // well-known LUs only: we have none
	default:
		return invalidCDBField(2, -1)
	}
	if lu != nil {
		// Reading the LUN inventory clears REPORTED LUNS DATA HAS CHANGED.
		lu.mutate(func(s *luState) bool {
			if len(s.ua[cmd.Nexus]) == 0 {
				return false
			}
			s.clearUA(cmd.Nexus, ascReportedLUNsDataChanged)
			return true
		})
	}
	b := make([]byte, 8+8*len(luns))
	be32put(b, uint32(8*len(luns)))
	for i, l := range luns {
		e := b[8+8*i:]
		if l < 256 {
			e[1] = byte(l) // peripheral device addressing
		} else {
			e[0] = 0x40 | byte(l>>8) // flat space addressing
			e[1] = byte(l)
		}
	}
	b = allocLen(b, int(alloc))
	return Result{Status: StatusGood, Data: b, TransferLen: uint32(len(b))}
}

// absentLUN answers a command addressed to a LUN that has no LU
// (SPC-4 4.4.2 and 6.6.2).
func (t *Target) absentLUN(cmd *Command) Result {
	cdb := cmd.CDB
	switch cdb[0] {
	case opInquiry:
		if len(cdb) < 6 {
			return invalidOpcode()
		}
		alloc := int(be16(cdb[3:]))
		var b []byte
		if cdb[1]&1 != 0 {
			// A VPD page header saying "no LU here".
			b = []byte{0x7f, cdb[2], 0, 0}
		} else {
			b = standardInquiry(0x7f, defaultVendor, defaultProduct, defaultRevision)
		}
		b = allocLen(b, alloc)
		return Result{Status: StatusGood, Data: b, TransferLen: uint32(len(b))}
	case opRequestSense:
		if len(cdb) < 6 {
			return invalidOpcode()
		}
		b := senseInfo{key: SenseIllegalRequest, asc: ascLUNotSupported}.bytes()
		b = allocLen(b, int(cdb[4]))
		return Result{Status: StatusGood, Data: b, TransferLen: uint32(len(b))}
	}
	return illegalRequest(ascLUNotSupported)
}
