// Package pidlock is an exclusive lock on a file that names its holder:
// flock(2) on the file, whose content is the holder's pid, so that the
// one refused can say who holds it. The lock goes with the process (or
// with unlock), never stays behind after a crash.
package pidlock

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrBusy is wrapped by the *BusyError Lock returns when another open
// file (another process, or another Lock in this one) holds the lock.
var ErrBusy = errors.New("locked by another process")

// BusyError says who holds the lock, as far as its file tells.
type BusyError struct {
	Path  string
	PID   int       // 0 if the holder wrote none
	Since time.Time // when the holder took it (the file's mtime)
}

func (e *BusyError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("%s: %v", e.Path, ErrBusy)
	}
	return fmt.Sprintf("%s: %v (pid %d, since %s)", e.Path, ErrBusy, e.PID, e.Since.Format("15:04:05"))
}

func (e *BusyError) Unwrap() error { return ErrBusy }

// Lock takes path (created 0600 if missing) for this process and writes
// its pid into it. unlock empties the file and releases the lock.
func Lock(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			e := &BusyError{Path: path}
			b, _ := io.ReadAll(io.LimitReader(f, 64))
			e.PID, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			if fi, err := f.Stat(); err == nil {
				e.Since = fi.ModTime()
			}
			return nil, e
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() {
		_ = f.Truncate(0)
		f.Close()
	}, nil
}
