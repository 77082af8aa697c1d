package iscsi

import (
	"context"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/targetd/scsi"
)

// task is one SCSI command of a session, from its Command PDU to its status.
type task struct {
	s    *session
	itt  uint32
	lun  uint64
	cmd  scsi.Command
	edtl uint32
	// immediate: the command came with the I bit, outside the CmdSN window.
	immediate bool

	// Write data collection. data has edtl bytes; got counts bytes in.
	got         uint32
	unsolicited bool   // unsolicited Data-Out still expected
	unsolLimit  uint32 // end offset of the unsolicited burst
	unsolDataSN uint32
	nextOffset  uint32 // first byte not yet asked for by an R2T
	r2tSN       uint32
	r2ts        []*r2t
	// deferred: a write over inlineMaxBytes whose cmd.Data holds only
	// its first burst until grow gives it the whole buffer, with budget
	// bytes of the server's write budget (given back by finish).
	deferred bool
	budget   int64
	// awaiting: a goroutine waits for the write budget and will send the
	// first R2Ts (awaitWriteBudget); guarded by mu.
	awaiting bool

	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	state   taskState
	aborted bool
	done    chan struct{}
	start   time.Time
}

type taskState int

const (
	taskReceiving  taskState = iota // waiting for Data-Out
	taskRunning                     // in the SCSI layer
	taskResponding                  // status being sent
	taskDone
)

// r2t is one outstanding R2T and the Data-Out sequence answering it.
type r2t struct {
	ttt       uint32
	offset    uint32
	length    uint32
	got       uint32
	expDataSN uint32
}

// abort marks the task aborted (a task not yet responding sends no
// status) and returns the state it was in.
func (t *task) abort() taskState {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state < taskResponding {
		t.aborted = true
		t.cancel()
	}
	return t.state
}

// abortedReceiving reports whether the task was aborted while it waited
// for Data-Out, so its reader must finish it.
func (t *task) abortedReceiving() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.state == taskReceiving && t.aborted
}

// beginResponse moves the task to responding unless it was aborted.
func (t *task) beginResponse() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.aborted {
		return false
	}
	t.state = taskResponding
	return true
}

func (t *task) setState(st taskState) {
	t.mu.Lock()
	t.state = st
	t.mu.Unlock()
}

// receiving reports whether the task still waits for Data-Out.
func (t *task) receiving() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.state == taskReceiving && !t.aborted
}

// awaitingBudget reports whether t's first R2Ts are still to come from
// awaitWriteBudget's goroutine (so no Data-Out may arrive yet).
func (t *task) awaitingBudget() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.awaiting
}

// grow gives a deferred write its whole buffer, holding n bytes of srv's
// write budget; the first burst moves over. The reader owns t, or t.mu is
// held.
func (t *task) grow(srv *Server, n int64) {
	buf := srv.bufs.get(int(t.edtl))
	copy(buf, t.cmd.Data[:t.got])
	srv.bufs.put(t.cmd.Data)
	t.cmd.Data = buf
	t.deferred = false
	t.budget = n
}

// takeBudget returns the write budget t holds, once.
func (t *task) takeBudget() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.budget
	t.budget = 0
	return n
}
