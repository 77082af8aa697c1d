package scsi

import (
	"sync"
	"sync/atomic"
)

// task is one command in flight in an LU. Tasks are pooled: a READ or
// WRITE must not allocate to register itself.
type task struct {
	key taskKey
	// aborted is set by a task management function, a reset, PREEMPT AND
	// ABORT or nexus loss; the task then stops at its next check and
	// Execute returns ErrAborted.
	aborted atomic.Bool
	// seq changes every time the task finishes, so that a waiter can tell
	// "the task I aborted has finished" even after the struct was reused.
	seq atomic.Uint64
}

type taskKey struct {
	nexus Nexus
	tag   uint32
}

// taskShards spreads the registry over several mutexes so that concurrent
// commands of one LU do not all meet on one lock.
const taskShards = 16

// taskSet is the per-LU registry of tasks in flight, keyed by (nexus, tag).
type taskSet struct {
	pool   sync.Pool
	shards [taskShards]struct {
		mu sync.Mutex
		m  map[taskKey]*task
	}

	// waitMu guards done, a channel closed (and replaced) each time an
	// aborted task finishes; abort waiters sleep on it.
	waitMu sync.Mutex
	done   chan struct{}
}

func newTaskSet() *taskSet {
	ts := &taskSet{done: make(chan struct{})}
	ts.pool.New = func() any { return new(task) }
	for i := range ts.shards {
		ts.shards[i].m = make(map[taskKey]*task)
	}
	return ts
}

// begin registers a task. A duplicate (nexus, tag) replaces the older entry
// for ABORT TASK purposes; the transport is expected to refuse overlapped
// tags before calling us.
func (ts *taskSet) begin(n Nexus, tag uint32) *task {
	t := ts.pool.Get().(*task)
	t.key = taskKey{nexus: n, tag: tag}
	t.aborted.Store(false)
	sh := &ts.shards[tag%taskShards]
	sh.mu.Lock()
	sh.m[t.key] = t
	sh.mu.Unlock()
	return t
}

// end unregisters t and wakes abort waiters if t had been aborted.
func (ts *taskSet) end(t *task) {
	sh := &ts.shards[t.key.tag%taskShards]
	sh.mu.Lock()
	if sh.m[t.key] == t {
		delete(sh.m, t.key)
	}
	sh.mu.Unlock()
	t.seq.Add(1)
	if t.aborted.Load() {
		ts.waitMu.Lock()
		close(ts.done)
		ts.done = make(chan struct{})
		ts.waitMu.Unlock()
	}
	t.key = taskKey{}
	ts.pool.Put(t)
}

// marked is a task that was aborted, with its seq and nexus at the time.
type marked struct {
	t     *task
	seq   uint64
	nexus Nexus
}

// abortWhere marks every registered task for which match is true and
// returns them so that the caller can wait for them to finish.
func (ts *taskSet) abortWhere(match func(k taskKey) bool) []marked {
	var out []marked
	for i := range ts.shards {
		sh := &ts.shards[i]
		sh.mu.Lock()
		for k, t := range sh.m {
			if match(k) {
				out = append(out, marked{t: t, seq: t.seq.Load(), nexus: k.nexus})
				t.aborted.Store(true)
			}
		}
		sh.mu.Unlock()
	}
	return out
}

// abortOne marks the task (n, tag); it reports whether it was found.
func (ts *taskSet) abortOne(n Nexus, tag uint32) (marked, bool) {
	sh := &ts.shards[tag%taskShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t, ok := sh.m[taskKey{nexus: n, tag: tag}]
	if !ok {
		return marked{}, false
	}
	m := marked{t: t, seq: t.seq.Load(), nexus: n}
	t.aborted.Store(true)
	return m, true
}

// wait blocks until every marked task has finished, or until stop is
// closed (nil: never).
func (ts *taskSet) wait(ms []marked, stop <-chan struct{}) {
	for {
		ts.waitMu.Lock()
		ch := ts.done
		ts.waitMu.Unlock()
		all := true
		for _, m := range ms {
			if m.t.seq.Load() == m.seq {
				all = false
				break
			}
		}
		if all {
			return
		}
		select {
		case <-ch:
		case <-stop:
			return
		}
	}
}
