package fenced

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/fencing/ledger"
)

// ledgerRef is the ledger.Store fenced hands out (to its handlers, loops
// and the Operator): it delegates to the Store of the current member,
// which a forced failover or a rejoin replaces, and answers ErrNoQuorum
// while there is none. It also keeps the last records it listed, for the
// answer of a node without quorum.
type ledgerRef struct {
	mu    sync.RWMutex
	store ledger.Store

	cacheMu  sync.Mutex
	last     []ledger.Record
	lastTime time.Time
}

var _ ledger.Store = (*ledgerRef)(nil)

func (l *ledgerRef) set(s ledger.Store) ledger.Store {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.store
	l.store = s
	return old
}

func (l *ledgerRef) cur() (ledger.Store, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.store == nil {
		return nil, fmt.Errorf("%w: the ledger is restarting", ledger.ErrNoQuorum)
	}
	return l.store, nil
}

// cached returns the last records listed and when.
func (l *ledgerRef) cached() ([]ledger.Record, time.Time) {
	l.cacheMu.Lock()
	defer l.cacheMu.Unlock()
	return append([]ledger.Record(nil), l.last...), l.lastTime
}

func (l *ledgerRef) Get(ctx context.Context, guest string) (ledger.Record, error) {
	s, err := l.cur()
	if err != nil {
		return ledger.Record{}, err
	}
	return s.Get(ctx, guest)
}

func (l *ledgerRef) List(ctx context.Context) ([]ledger.Record, error) {
	s, err := l.cur()
	if err != nil {
		return nil, err
	}
	recs, err := s.List(ctx)
	if err == nil {
		l.cacheMu.Lock()
		l.last = append([]ledger.Record(nil), recs...)
		l.lastTime = time.Now()
		l.cacheMu.Unlock()
	}
	return recs, err
}

func (l *ledgerRef) Update(ctx context.Context, guest string, fn func(r *ledger.Record) error) (ledger.Record, error) {
	s, err := l.cur()
	if err != nil {
		return ledger.Record{}, err
	}
	return s.Update(ctx, guest, fn)
}

func (l *ledgerRef) Delete(ctx context.Context, guest string) error {
	s, err := l.cur()
	if err != nil {
		return err
	}
	return s.Delete(ctx, guest)
}

func (l *ledgerRef) Hold(ctx context.Context, guest string) error {
	s, err := l.cur()
	if err != nil {
		return err
	}
	return s.Hold(ctx, guest)
}

func (l *ledgerRef) Drop(ctx context.Context, guest string) error {
	s, err := l.cur()
	if err != nil {
		return err
	}
	return s.Drop(ctx, guest)
}

func (l *ledgerRef) Holder(ctx context.Context, guest string) (string, error) {
	s, err := l.cur()
	if err != nil {
		return "", err
	}
	return s.Holder(ctx, guest)
}

func (l *ledgerRef) LastRenewed() time.Time {
	s, err := l.cur()
	if err != nil {
		return time.Time{}
	}
	return s.LastRenewed()
}

// Watch follows the current store; when it is replaced, the watch of the
// old one ends and the new one is watched.
func (l *ledgerRef) Watch(ctx context.Context) <-chan string {
	out := make(chan string, 16)
	go func() {
		defer close(out)
		for ctx.Err() == nil {
			s, err := l.cur()
			if err != nil {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
					continue
				}
			}
			for g := range s.Watch(ctx) {
				select {
				case out <- g:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return out
}

func (l *ledgerRef) Quorum(ctx context.Context) error {
	s, err := l.cur()
	if err != nil {
		return err
	}
	return s.Quorum(ctx)
}

// Close closes the current store.
func (l *ledgerRef) Close() error {
	s := l.set(nil)
	if s == nil {
		return nil
	}
	return s.Close()
}

// revisioner is a Store that can say the revision of its last read.
type revisioner interface{ Revision() int64 }

func (l *ledgerRef) revision() int64 {
	s, err := l.cur()
	if err != nil {
		return 0
	}
	if r, ok := s.(revisioner); ok {
		return r.Revision()
	}
	return 0
}
