package fenced

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// startedBook remembers the epoch each local guest was started at, in a
// file, so that a restarted fenced still knows it: the monitor destroys a
// guest whose ledger epoch moved past the one it was started with, even
// if the ledger names this node again (it was started elsewhere meanwhile
// and this copy is the older runner).
type startedBook struct {
	path string
	mu   sync.Mutex
	m    map[string]uint64
}

func openStartedBook(path string) (*startedBook, error) {
	b := &startedBook{path: path, m: map[string]uint64{}}
	if path == "" {
		return b, nil
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return b, nil
	case err != nil:
		return nil, fmt.Errorf("started epochs: %w", err)
	}
	if err := json.Unmarshal(data, &b.m); err != nil {
		// Losing it only weakens the epoch check (the owner check
		// stays), so a corrupt file is not worth refusing to start.
		b.m = map[string]uint64{}
		return b, fmt.Errorf("started epochs %s are corrupt, starting empty: %w", path, err)
	}
	return b, nil
}

func (b *startedBook) get(guest string) (uint64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.m[guest]
	return e, ok
}

func (b *startedBook) snapshot() map[string]uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]uint64, len(b.m))
	for k, v := range b.m {
		out[k] = v
	}
	return out
}

func (b *startedBook) set(guest string, epoch uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[guest] = epoch
	return b.save()
}

func (b *startedBook) forget(guest string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.m[guest]; !ok {
		return nil
	}
	delete(b.m, guest)
	return b.save()
}

func (b *startedBook) save() error {
	if b.path == "" {
		return nil
	}
	data, err := json.Marshal(b.m)
	if err != nil {
		return err
	}
	return writeAtomic(b.path, data)
}

// writeAtomic replaces path with data through a synced temporary file.
func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// renewalFile persists the time of the last lease renewal, so that a
// fenced restarted while its guests run gives them only what is left of
// the old lease, not a fresh one (the old lease keeps running out while
// no fenced renews it).
type renewalFile struct {
	path    string
	written time.Time
}

func (r *renewalFile) load() time.Time {
	if r.path == "" {
		return time.Time{}
	}
	b, err := os.ReadFile(r.path)
	if err != nil {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return time.Time{}
	}
	r.written = t
	return t
}

// store writes t when it moved on by a second or more since the last
// write (a write per second at most).
func (r *renewalFile) store(t time.Time) error {
	if r.path == "" || t.Sub(r.written) < time.Second {
		return nil
	}
	if err := writeAtomic(r.path, []byte(t.UTC().Format(time.RFC3339Nano))); err != nil {
		return err
	}
	r.written = t
	return nil
}
