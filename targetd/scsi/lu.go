package scsi

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
)

// LUConfig describes one logical unit.
type LUConfig struct {
	// Dev is the storage; required.
	Dev BlockDev
	// Serial is the unit serial number (VPD page 0x80), printable ASCII,
	// at most 20 bytes (what virtio-blk can carry).
	Serial string
	// WWN is the logical unit's NAA designator (VPD page 0x83), already
	// formed (NAA type 3, locally assigned).
	WWN [8]byte
	// VendorID (default "MHCODI", ≤ 8 bytes), ProductID (≤ 16) and Revision
	// (≤ 4) fill the standard INQUIRY data.
	VendorID, ProductID, Revision string
	// LogicalBlockSize is 512 (default) or 4096.
	LogicalBlockSize uint32
	// PhysicalBlockSize is a hint (READ CAPACITY(16) LOGICAL BLOCKS PER
	// PHYSICAL BLOCK EXPONENT): a power of two ≥ LogicalBlockSize, default
	// LogicalBlockSize.
	PhysicalBlockSize uint32
	// ThinProvisioned enables UNMAP and WRITE SAME with UNMAP (LBPME).
	ThinProvisioned bool
	// ReadOnly makes every write fail with DATA PROTECT.
	ReadOnly bool
	// MaxTransferBlocks is the largest READ/WRITE in blocks (VPD 0xB0;
	// longer transfers fail with INVALID FIELD IN CDB). Default 8 MiB.
	MaxTransferBlocks uint32
	// MaxUnmapBlocks bounds the blocks of one UNMAP (default 1 Mi blocks)
	// and MaxUnmapDescriptors its block descriptors (default 1024).
	MaxUnmapBlocks      uint32
	MaxUnmapDescriptors uint32
	// MaxWriteSameBlocks bounds WRITE SAME (MAXIMUM WRITE SAME LENGTH);
	// default MaxTransferBlocks. A zero block count (to the end of the LU)
	// is refused (WSNZ=1).
	MaxWriteSameBlocks uint32
	// WriteCacheEnabled is the initial WCE bit of the caching mode page
	// (nil: true). With WCE set, writes complete before Dev.Sync and
	// SYNCHRONIZE CACHE and FUA call it; with WCE clear every write is
	// followed by Dev.Sync.
	WriteCacheEnabled *bool
}

// Defaults for LUConfig fields left zero.
const (
	defaultVendor        = "MHCODI"
	defaultProduct       = "VOLUME"
	defaultRevision      = "0001"
	defaultMaxXferBytes  = 8 << 20
	defaultMaxUnmap      = 1 << 20
	defaultMaxUnmapDescs = 1024
	maxCompareAndWrite   = 255 // NUMBER OF LOGICAL BLOCKS is one byte
)

// stripeCount and stripeShift define the write stripes: each write holds a
// read lock on the stripes its blocks fall in, and COMPARE AND WRITE and
// ORWRITE hold the write lock, which makes them atomic against other
// writes to the same blocks without serializing ordinary I/O.
const (
	stripeCount = 64
	stripeShift = 7 // 128 blocks per stripe
)

// LU is one logical unit: a BlockDev with SPC/SBC command processing,
// persistent reservations and unit attentions. Create with NewLU and add to
// a Target with Target.AddLU. All methods are safe for concurrent use.
type LU struct {
	cfg    LUConfig
	dev    BlockDev
	mapper BlockMapper // dev's, for GET LBA STATUS; nil if it has none
	bs     uint32      // logical block size
	shift  uint        // log2(bs)
	lbppbe uint8       // logical blocks per physical block exponent

	// mu serializes writers of state; readers load it atomically.
	mu    sync.Mutex
	state atomic.Pointer[luState]

	// wce is the current WCE bit of the caching mode page.
	wce atomic.Bool
	// swp is the current SWP bit of the control mode page (swp.go).
	swp atomic.Bool

	tasks   *taskSet
	stripes [stripeCount]sync.RWMutex

	// attached is set once the LU is added to a Target.
	attached atomic.Bool
}

// NewLU validates cfg, fills defaults and returns the LU.
func NewLU(cfg LUConfig) (*LU, error) {
	if cfg.Dev == nil {
		return nil, errors.New("scsi: LUConfig.Dev is nil")
	}
	if cfg.LogicalBlockSize == 0 {
		cfg.LogicalBlockSize = 512
	}
	if cfg.LogicalBlockSize != 512 && cfg.LogicalBlockSize != 4096 {
		return nil, fmt.Errorf("scsi: logical block size %d: want 512 or 4096", cfg.LogicalBlockSize)
	}
	if cfg.PhysicalBlockSize == 0 {
		cfg.PhysicalBlockSize = cfg.LogicalBlockSize
	}
	ratio := cfg.PhysicalBlockSize / cfg.LogicalBlockSize
	if cfg.PhysicalBlockSize%cfg.LogicalBlockSize != 0 || ratio&(ratio-1) != 0 || ratio > 1<<15 {
		return nil, fmt.Errorf("scsi: physical block size %d: want a power-of-two multiple of %d",
			cfg.PhysicalBlockSize, cfg.LogicalBlockSize)
	}
	if len(cfg.Serial) > 20 || !printable(cfg.Serial) {
		return nil, fmt.Errorf("scsi: serial %q: want at most 20 printable ASCII bytes", cfg.Serial)
	}
	if cfg.VendorID == "" {
		cfg.VendorID = defaultVendor
	}
	if cfg.ProductID == "" {
		cfg.ProductID = defaultProduct
	}
	if cfg.Revision == "" {
		cfg.Revision = defaultRevision
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"vendor", cfg.VendorID, 8}, {"product", cfg.ProductID, 16}, {"revision", cfg.Revision, 4}} {
		if len(f.v) > f.max || !printable(f.v) {
			return nil, fmt.Errorf("scsi: %s %q: want at most %d printable ASCII bytes", f.name, f.v, f.max)
		}
	}
	if cfg.MaxTransferBlocks == 0 {
		cfg.MaxTransferBlocks = defaultMaxXferBytes / cfg.LogicalBlockSize
	}
	if cfg.MaxWriteSameBlocks == 0 {
		cfg.MaxWriteSameBlocks = cfg.MaxTransferBlocks
	}
	if cfg.MaxUnmapBlocks == 0 {
		cfg.MaxUnmapBlocks = defaultMaxUnmap
	}
	if cfg.MaxUnmapDescriptors == 0 {
		cfg.MaxUnmapDescriptors = defaultMaxUnmapDescs
	}
	lu := &LU{
		cfg:    cfg,
		dev:    cfg.Dev,
		bs:     cfg.LogicalBlockSize,
		shift:  uint(bits.TrailingZeros32(cfg.LogicalBlockSize)),
		lbppbe: uint8(bits.TrailingZeros32(ratio)),
		tasks:  newTaskSet(),
	}
	lu.mapper, _ = cfg.Dev.(BlockMapper)
	lu.state.Store(newLUState())
	lu.wce.Store(cfg.WriteCacheEnabled == nil || *cfg.WriteCacheEnabled)
	return lu, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// BlockSize is the logical block size in bytes.
func (lu *LU) BlockSize() uint32 { return lu.bs }

// numBlocks is the current capacity in logical blocks.
func (lu *LU) numBlocks() uint64 {
	sz := lu.dev.Size()
	if sz <= 0 {
		return 0
	}
	return uint64(sz) >> lu.shift
}

// exec is the context of one command while it runs.
type exec struct {
	lu     *LU
	ctx    context.Context
	t      *task
	cmd    *Command
	pool   *BufPool
	strict bool // Target's StrictDataOut
}

// stopped reports whether the task was aborted or its context cancelled;
// handlers check it before each device access.
func (x *exec) stopped() bool { return x.t.aborted.Load() || x.ctx.Err() != nil }

// execute runs cmd on the LU; see Target.Execute.
func (lu *LU) execute(ctx context.Context, cmd *Command, pool *BufPool, strict bool) (Result, error) {
	if ctx.Err() != nil {
		return Result{}, ErrAborted
	}
	t := lu.tasks.begin(cmd.Nexus, cmd.Tag)
	x := exec{lu: lu, ctx: ctx, t: t, cmd: cmd, pool: pool, strict: strict}
	res := x.run()
	aborted := x.stopped()
	lu.tasks.end(t)
	if aborted {
		pool.Put(res.pooled)
		return Result{}, ErrAborted
	}
	return res, nil
}

// run checks the gate (unit attentions, reservations) and dispatches.
func (x *exec) run() Result {
	cdb := x.cmd.CDB
	op := cdb[0]
	if n := cdbLen(op); n == 0 || len(cdb) < n {
		return invalidOpcode()
	}
	// NACA (control byte bit 2) needs NormACA, which we do not offer.
	if cdb[cdbLen(op)-1]&0x04 != 0 {
		return invalidCDBField(cdbLen(op)-1, 2)
	}
	if !x.lu.state.Load().quiet(x.cmd.Nexus) {
		if res, stop := x.lu.slowGate(x.cmd.Nexus, op); stop {
			return res
		}
	}
	if x.lu.swp.Load() && x.lu.writesMedium(op) {
		return writeProtected()
	}
	return x.dispatch(op)
}

func (x *exec) dispatch(op byte) Result {
	switch op {
	case opRead6, opRead10, opRead12, opRead16:
		return x.read()
	case opWrite6, opWrite10, opWrite12, opWrite16:
		return x.write(false)
	case opWriteVerify10, opWriteVerify12, opWriteVerify16:
		return x.write(true)
	case opVerify10, opVerify12, opVerify16:
		return x.verify()
	case opCompareAndWrite:
		return x.compareAndWrite()
	case opOrWrite16:
		return x.orWrite()
	case opSyncCache10, opSyncCache16:
		return x.syncCache()
	case opPrefetch10, opPrefetch16:
		return x.prefetch()
	case opWriteSame10, opWriteSame16:
		return x.writeSame()
	case opUnmap:
		return x.unmap()
	case opTestUnitReady:
		return good()
	case opInquiry:
		return x.inquiry()
	case opRequestSense:
		return x.requestSense()
	case opReadCapacity10:
		return x.readCapacity10()
	case opServiceActionIn16:
		switch x.cmd.CDB[1] & 0x1f {
		case saReadCapacity16:
			return x.readCapacity16()
		case saGetLBAStatus:
			return x.getLBAStatus()
		}
		return invalidServiceAction()
	case opMaintenanceIn:
		if x.cmd.CDB[1]&0x1f == saReportSupportedOps {
			return x.reportSupportedOpcodes()
		}
		return invalidServiceAction()
	case opModeSense6, opModeSense10:
		return x.modeSense()
	case opModeSelect6, opModeSelect10:
		return x.modeSelect()
	case opStartStopUnit:
		return x.startStopUnit()
	case opPRIn:
		return x.prIn()
	case opPROut:
		return x.prOut()
	case opReserve6, opReserve10:
		return x.reserve()
	case opRelease6, opRelease10:
		return x.release()
	}
	return invalidOpcode()
}

// slowGate handles everything the lock-free fast path skips: a nexus seen
// for the first time, a pending unit attention, a reservation. It returns
// stop=true with the result to send when the command must not run.
func (lu *LU) slowGate(n Nexus, op byte) (Result, bool) {
	s := lu.state.Load()
	if _, ok := s.known[n]; !ok {
		lu.mutate(func(s *luState) bool {
			if _, ok := s.known[n]; ok {
				return false
			}
			s.known[n] = struct{}{}
			return true
		})
		s = lu.state.Load()
	}
	// SPC-4 5.14: INQUIRY, REPORT LUNS and REQUEST SENSE neither report
	// nor clear a unit attention; every other command reports the oldest.
	if len(s.ua[n]) != 0 && op != opInquiry && op != opReportLUNs && op != opRequestSense {
		var code asc
		var ok bool
		lu.mutate(func(s *luState) bool {
			code, ok = s.popUA(n)
			return ok
		})
		if ok {
			return checkCondition(SenseUnitAttention, code), true
		}
		s = lu.state.Load()
	}
	if s.spc2 != nil && *s.spc2 != n && !allowedUnderSPC2(op) {
		return reservationConflict(), true
	}
	if s.res != nil && prConflict(s, n, accessOf(op)) {
		return reservationConflict(), true
	}
	return Result{}, false
}

// capacityCheck validates an access of blocks at lba: transfer lengths
// above MaxTransferBlocks are an INVALID FIELD IN CDB (field is the
// transfer length's byte), accesses beyond the capacity LBA OUT OF RANGE.
func (x *exec) capacityCheck(lba uint64, blocks uint32, lenField int, limit bool) (Result, bool) {
	if limit && blocks > x.lu.cfg.MaxTransferBlocks {
		return invalidCDBField(lenField, -1), false
	}
	nb := x.lu.numBlocks()
	if lba >= nb || uint64(blocks) > nb-lba {
		return lbaOutOfRange(), false
	}
	return Result{}, true
}

// lenField returns the CDB byte of the transfer length for 6/10/12/16
// byte READ/WRITE-style CDBs (for sense field pointers).
func lenField(op byte) int {
	switch cdbLen(op) {
	case 6:
		return 4
	case 10:
		return 7
	case 12:
		return 6
	}
	return 10
}

// lockStripes takes the stripe locks covering [lba, lba+blocks): shared
// for ordinary writes, exclusive for read-modify-write commands. Locks are
// taken in ascending order so that writers never deadlock.
func (lu *LU) lockStripes(lba uint64, blocks uint64, exclusive bool) uint64 {
	mask := stripeMask(lba, blocks)
	for i := 0; i < stripeCount; i++ {
		if mask&(1<<i) != 0 {
			if exclusive {
				lu.stripes[i].Lock()
			} else {
				lu.stripes[i].RLock()
			}
		}
	}
	return mask
}

func (lu *LU) unlockStripes(mask uint64, exclusive bool) {
	for i := stripeCount - 1; i >= 0; i-- {
		if mask&(1<<i) != 0 {
			if exclusive {
				lu.stripes[i].Unlock()
			} else {
				lu.stripes[i].RUnlock()
			}
		}
	}
}

func stripeMask(lba, blocks uint64) uint64 {
	if blocks == 0 {
		return 0
	}
	first, last := lba>>stripeShift, (lba+blocks-1)>>stripeShift
	if last-first >= stripeCount-1 || last < first {
		return ^uint64(0)
	}
	var m uint64
	for s := first; s <= last; s++ {
		m |= 1 << (s % stripeCount)
	}
	return m
}

// AbortTask aborts the task tag of nexus n (ABORT TASK). It returns false
// when no such task is in flight (the transport answers TASK DOES NOT
// EXIST), and otherwise returns once that task's Execute has returned
// ErrAborted (or completed), so that the transport can answer FUNCTION
// COMPLETE right away.
func (lu *LU) AbortTask(n Nexus, tag uint32) bool {
	m, ok := lu.tasks.abortOne(n, tag)
	if ok {
		lu.tasks.wait([]marked{m}, nil)
	}
	return ok
}

// AbortTaskSet aborts every task of nexus n (ABORT TASK SET) and returns
// once they have all returned.
func (lu *LU) AbortTaskSet(n Nexus) {
	ms := lu.tasks.abortWhere(func(k taskKey) bool { return k.nexus == n })
	lu.tasks.wait(ms, nil)
}

// ClearTaskSet aborts the tasks of every nexus (CLEAR TASK SET: with the
// control mode page's TST=0 there is one task set for all nexuses); the
// other nexuses whose tasks were cleared get COMMANDS CLEARED BY ANOTHER
// INITIATOR. It returns once the aborted tasks have returned.
func (lu *LU) ClearTaskSet(by Nexus) {
	ms := lu.tasks.abortWhere(func(taskKey) bool { return true })
	cleared := map[Nexus]bool{}
	for _, m := range ms {
		if n := m.nexus; n != by {
			cleared[n] = true
		}
	}
	if len(cleared) != 0 {
		lu.mutate(func(s *luState) bool {
			for n := range cleared {
				s.addUA(n, ascCommandsCleared)
			}
			return true
		})
	}
	lu.tasks.wait(ms, nil)
}

// Reset performs a LOGICAL UNIT RESET requested through nexus by: it
// aborts every task of every nexus, releases a RESERVE(6)/(10)
// reservation, keeps persistent reservations (SPC-4 5.13.1) and raises
// BUS DEVICE RESET FUNCTION OCCURRED for every nexus that has talked to
// the LU, by included. It returns once the aborted tasks have returned.
//
// The nexus that asked gets the unit attention too: SAM-5's logical unit
// reset sets it for the initiator port of every I_T nexus, unlike CLEAR
// TASK SET's COMMANDS CLEARED BY ANOTHER INITIATOR, and a multipath
// initiator relies on it to learn that the reset also dropped the
// commands it had queued on that path (libiscsi's MultipathIO.Reset
// checks every path, the sender's first).
func (lu *LU) Reset(by Nexus) {
	ms := lu.tasks.abortWhere(func(taskKey) bool { return true })
	lu.mutate(func(s *luState) bool {
		s.spc2 = nil
		s.known[by] = struct{}{}
		s.addUAAll(ascBusDeviceReset, nil)
		return true
	})
	lu.tasks.wait(ms, nil)
}

// NexusLost tells the LU that nexus n is gone (session closed or dropped):
// its tasks are aborted, its RESERVE(6)/(10) reservation released and its
// pending unit attentions dropped. Persistent reservations survive, as
// SPC-4 requires.
func (lu *LU) NexusLost(n Nexus) {
	ms := lu.tasks.abortWhere(func(k taskKey) bool { return k.nexus == n })
	lu.mutate(func(s *luState) bool {
		if s.spc2 != nil && *s.spc2 == n {
			s.spc2 = nil
		}
		delete(s.ua, n)
		delete(s.known, n)
		return true
	})
	lu.tasks.wait(ms, nil)
}

// NotifyResized raises CAPACITY DATA HAS CHANGED for every nexus that has
// talked to the LU; call it after the BlockDev has grown.
func (lu *LU) NotifyResized() {
	lu.mutate(func(s *luState) bool {
		s.addUAAll(ascCapacityDataChanged, nil)
		return true
	})
}

// notifyLUNsChanged raises REPORTED LUNS DATA HAS CHANGED.
func (lu *LU) notifyLUNsChanged() {
	lu.mutate(func(s *luState) bool {
		s.addUAAll(ascReportedLUNsDataChanged, nil)
		return true
	})
}
