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

	"github.com/mhcodi/mhcodi/targetd/iscsi"
)

// FenceState is who may use an export, and at which fencing epoch.
type FenceState struct {
	// Owner is the only initiator IQN admitted; empty admits every node.
	Owner string `json:"owner,omitempty"`
	// Epoch is the fencing token of the last restriction; it only grows.
	Epoch uint64    `json:"epoch"`
	Since time.Time `json:"since,omitempty"`
}

// fenceStore keeps FenceState per target IQN in a JSON file, written
// atomically, so a restarted targetd does not forget whom it fenced out.
type fenceStore struct {
	path string
	mu   sync.RWMutex
	m    map[string]FenceState
}

func openFenceStore(path string) (*fenceStore, error) {
	s := &fenceStore{path: path, m: map[string]FenceState{}}
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

func (s *fenceStore) get(iqn string) FenceState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m[iqn]
}

// set records st for iqn unless it would move the epoch backwards.
func (s *fenceStore) set(iqn string, st FenceState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.m[iqn]
	switch {
	case st.Epoch < cur.Epoch:
		return fmt.Errorf("%w: %s is at epoch %d, the request carries %d", ErrStaleEpoch, iqn, cur.Epoch, st.Epoch)
	case st.Epoch == cur.Epoch && cur.Epoch != 0 && st.Owner != cur.Owner:
		return fmt.Errorf("%w: %s already belongs to %s at epoch %d", ErrStaleEpoch, iqn, cur.Owner, cur.Epoch)
	}
	next := make(map[string]FenceState, len(s.m)+1)
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

// ErrStaleEpoch refuses a fencing request older than what targetd holds.
var ErrStaleEpoch = errors.New("stale fencing epoch")

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

// FenceResult says what a Fence call did.
type FenceResult struct {
	Targets []string `json:"targets"`
	Dropped int      `json:"dropped_sessions"`
}

// Fence restricts the legs of guest (one disk, or all if disk is empty)
// kept on this node to the initiator of ownerNode at epoch, and drops every
// other session of them. When it returns, no other initiator can write to
// them. An epoch lower than the one held is refused (ErrStaleEpoch).
func (d *Daemon) Fence(guest, disk, ownerNode string, epoch uint64) (FenceResult, error) {
	d.mu.RLock()
	if _, ok := d.cfg.Node(ownerNode); !ok {
		d.mu.RUnlock()
		return FenceResult{}, fmt.Errorf("owner node %q is not defined", ownerNode)
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
		return FenceResult{}, fmt.Errorf("node %s exports no leg of %s/%s", d.opts.Node, guest, firstNonEmpty(disk, "*"))
	}
	res := FenceResult{Targets: iqns}
	now := time.Now().UTC()
	for _, iqn := range iqns {
		if err := d.fence.set(iqn, FenceState{Owner: owner, Epoch: epoch, Since: now}); err != nil {
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

// WriteRecord is one line of the write log: the first write an initiator
// made to a target at an epoch. The failover tests check from it that no
// target took writes from two initiators in one epoch.
type WriteRecord struct {
	Time      time.Time `json:"time"`
	Target    string    `json:"target"`
	Initiator string    `json:"initiator"`
	Epoch     uint64    `json:"epoch"`
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
	b, _ := json.Marshal(WriteRecord{Time: time.Now().UTC(), Target: target, Initiator: k.initiator, Epoch: epoch})
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

// ReadWriteLog reads a write log file.
func ReadWriteLog(path string) ([]WriteRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []WriteRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r WriteRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return out, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}
