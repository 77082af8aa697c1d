// Package console attaches a terminal to a guest's serial console, the
// way virsh console does: what the guest writes goes to the terminal,
// what is typed goes to the guest, and Ctrl-] detaches. One attach at a
// time per guest (Lock); the hypervisor keeps writing the console log
// whether or not anyone is attached.
package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/internal/pidlock"

	"golang.org/x/sys/unix"
)

// Escape is the byte that detaches: Ctrl-], as in virsh, telnet and xl.
const Escape = 0x1d

// LockFile is the lock an attach holds in the guest's run directory.
const LockFile = "console.lock"

// ErrBusy is wrapped by Lock when another attach holds the console.
var ErrBusy = errors.New("the console is attached elsewhere")

// Lock takes the console of the guest whose run directory is dir for
// this process, and writes its pid into the lock file for the message a
// second attach gets. unlock releases it.
func Lock(dir string) (unlock func(), err error) {
	unlock, err = pidlock.Lock(filepath.Join(dir, LockFile))
	var busy *pidlock.BusyError
	if errors.As(err, &busy) {
		if busy.PID != 0 {
			return nil, fmt.Errorf("%w (by pid %d, since %s): detach it there with Ctrl-], or end that process", ErrBusy, busy.PID, busy.Since.Format("15:04:05"))
		}
		return nil, fmt.Errorf("%w: detach it there with Ctrl-]", ErrBusy)
	}
	return unlock, err
}

// Attach copies between conn (the guest's console, or a relay of it) and the terminal (in,
// out) until Escape is typed (detached true), the console closes (the
// guest ended), or ctx ends. What precedes Escape in the same read still
// reaches the guest.
func Attach(ctx context.Context, conn io.ReadWriteCloser, in io.Reader, out io.Writer) (detached bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var once sync.Once
	var result error
	done := make(chan struct{})
	finish := func(d bool, e error) {
		once.Do(func() {
			detached, result = d, e
			close(done)
		})
	}
	go func() {
		_, err := io.Copy(out, conn)
		if err == nil || errors.Is(err, net.ErrClosed) {
			err = io.EOF
		}
		finish(false, fmt.Errorf("the console closed: %w", err))
	}()
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := in.Read(buf)
			if n > 0 {
				chunk := buf[:n]
				i := bytes.IndexByte(chunk, Escape)
				if i >= 0 {
					chunk = chunk[:i]
				}
				if len(chunk) > 0 {
					if _, werr := conn.Write(chunk); werr != nil {
						finish(false, fmt.Errorf("writing to the console: %w", werr))
						return
					}
				}
				if i >= 0 {
					finish(true, nil)
					return
				}
			}
			if err != nil {
				// The terminal's input ended (a pipe): keep showing the
				// console until it closes or ctx ends.
				return
			}
		}
	}()
	select {
	case <-done:
	case <-ctx.Done():
		finish(false, ctx.Err())
	}
	if d, ok := conn.(interface{ SetDeadline(time.Time) error }); ok {
		_ = d.SetDeadline(time.Now())
	}
	conn.Close()
	return detached, result
}

// Splice copies both ways between a and b until either side ends, then
// closes both: a relay of a console between two connections.
func Splice(a, b io.ReadWriteCloser) {
	done := make(chan struct{}, 2)
	cp := func(dst io.Writer, src io.Reader) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	a.Close()
	b.Close()
	<-done
}

// MakeRaw puts the terminal fd in raw mode (no echo, no line editing, no
// signals from ^C: every byte goes to the guest) and returns what
// restores it; on a fd that is no terminal it does nothing.
func MakeRaw(fd int) (restore func(), err error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return func() {}, nil // not a terminal
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN] = 1
	raw.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, fmt.Errorf("raw terminal: %w", err)
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}
