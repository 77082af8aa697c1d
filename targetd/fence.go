package targetd

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/targetd/controlapi"
	"github.com/mhcodi/mhcodi/targetd/iscsi"
)

// fenceStore keeps FenceState per target IQN in a JSON file, written
// atomically, so a restarted targetd does not forget whom it fenced out.
type fenceStore struct {
	path string
	mu   sync.RWMutex
	m    map[string]controlapi.FenceState
}

func openFenceStore(path string) (*fenceStore, error) {
	s := &fenceStore{path: path, m: map[string]controlapi.FenceState{}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("fence state: %w", err)
	}
	if err := json.Unmarshal(b, &s.m); err != nil {
		return nil, fmt.Errorf("fence state %s is corrupt (%v); refusing to start without it, as it says whom to keep out", path, err)
	}
	return s, nil
}

func (s *fenceStore) get(iqn string) controlapi.FenceState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m[iqn]
}

// set records st for iqn unless it would move the epoch backwards.
func (s *fenceStore) set(iqn string, st controlapi.FenceState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.m[iqn]
	switch {
	case st.Epoch < cur.Epoch:
		return fmt.Errorf("%w: %s is at epoch %d, the request carries %d", controlapi.ErrStaleEpoch, iqn, cur.Epoch, st.Epoch)
	case st.Epoch == cur.Epoch && cur.Epoch != 0 && st.Owner != cur.Owner:
		return fmt.Errorf("%w: %s already belongs to %s at epoch %d", controlapi.ErrStaleEpoch, iqn, cur.Owner, cur.Epoch)
	}
	next := make(map[string]controlapi.FenceState, len(s.m)+1)
	for k, v := range s.m {
		next[k] = v
	}
	next[iqn] = st
	if err := writeFileAtomic(s.path, next); err != nil {
		return err
	}
	s.m = next
	return nil
}

func writeFileAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".fence-*")
	if err != nil {
		return fmt.Errorf("fence state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("fence state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fence state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("fence state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("fence state: %w", err)
	}
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		dir.Sync()
		dir.Close()
	}
	return nil
}

// Fence restricts the legs of guest (one disk, or all if disk is empty)
// kept on this node to the initiator of ownerNode at epoch, and drops every
// other session of them. When it returns, no other initiator can write to
// them. An epoch lower than the one held is refused (controlapi.ErrStaleEpoch).
func (d *Daemon) Fence(guest, disk, ownerNode string, epoch uint64) (controlapi.FenceResult, error) {
	d.mu.RLock()
	if _, ok := d.cfg.Node(ownerNode); !ok {
		d.mu.RUnlock()
		return controlapi.FenceResult{}, fmt.Errorf("owner node %q is not defined", ownerNode)
	}
	owner := d.cfg.InitiatorIQN(ownerNode)
	var iqns []string
	for iqn, e := range d.exports {
		if e.leg.Guest == guest && (disk == "" || e.leg.Disk == disk) {
			iqns = append(iqns, iqn)
		}
	}
	d.mu.RUnlock()
	if len(iqns) == 0 {
		return controlapi.FenceResult{}, fmt.Errorf("node %s exports no leg of %s/%s", d.opts.Node, guest, firstNonEmpty(disk, "*"))
	}
	res := controlapi.FenceResult{Targets: iqns}
	now := time.Now().UTC()
	for _, iqn := range iqns {
		if err := d.fence.set(iqn, controlapi.FenceState{Owner: owner, Epoch: epoch, Since: now}); err != nil {
			return res, err
		}
		res.Dropped += d.srv.DropSessions(fmt.Sprintf("fenced to %s at epoch %d", owner, epoch), func(s iscsi.SessionInfo) bool {
			return s.Target == iqn && s.Initiator != owner
		})
		d.log.Info("export fenced", "target", iqn, "owner", owner, "epoch", epoch)
	}
	return res, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// writeLog appends WriteRecords; the hot path is a map lookup under a lock.
type writeLog struct {
	mu   sync.Mutex
	f    *os.File
	w    *bufio.Writer
	seen map[writeKey]struct{}
}

type writeKey struct {
	target, initiator string
	epoch             uint64
}

func openWriteLog(path string) (*writeLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("write log: %w", err)
	}
	return &writeLog{f: f, w: bufio.NewWriter(f), seen: map[writeKey]struct{}{}}, nil
}

func (l *writeLog) record(target, initiator string, epoch uint64) {
	k := writeKey{target, strings.ToLower(initiator), epoch}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[k]; ok || l.f == nil {
		return
	}
	l.seen[k] = struct{}{}
	b, _ := json.Marshal(controlapi.WriteRecord{Time: time.Now().UTC(), Target: target, Initiator: k.initiator, Epoch: epoch})
	l.w.Write(append(b, '\n'))
	l.w.Flush()
}

func (l *writeLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	l.w.Flush()
	err := l.f.Close()
	l.f = nil
	return err
}
