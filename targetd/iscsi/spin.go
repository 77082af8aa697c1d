package iscsi

import (
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// spinFor is how long the reader polls the socket for the next request
// after it wrote its answers, before it parks on the network poller. An
// initiator that waited for those answers usually sends its next command
// within some microseconds; parking and being woken again costs two thread
// switches each way (the poller's thread, then the goroutine's), which at
// queue depth 1 is most of a command's latency.
const spinFor = 30 * time.Microsecond

// awaitData polls the connection for up to spinFor and returns as soon as
// a byte is readable (or the socket reports anything but "nothing yet").
// It never reads: the byte stays for the reader's next read, which then
// does not park.
//
// At most maxSpinners readers of the server poll at once (a quarter of
// GOMAXPROCS, at least one; none with a single P): with many busy sessions
// the others park, so polling never takes the cores the sessions' work
// needs; and a poller lets runnable goroutines go first.
func (c *conn) awaitData() {
	if c.rc == nil {
		return
	}
	srv := c.srv
	if srv.spinners.Add(1) > srv.maxSpinners {
		srv.spinners.Add(-1)
		return
	}
	defer srv.spinners.Add(-1)
	deadline := time.Now().Add(spinFor)
	var b [1]byte
	c.rc.Read(func(fd uintptr) bool {
		for {
			// Raw: MSG_DONTWAIT never blocks, the scheduler need not know.
			_, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
				unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
			if errno != unix.EAGAIN && errno != unix.EINTR || time.Now().After(deadline) {
				return true
			}
			runtime.Gosched() // goroutines with work go first
		}
	})
}

// rawConn is the connection's socket for awaitData; nil when it is not a
// socket (tests over pipes).
func rawConn(nc any) syscall.RawConn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
