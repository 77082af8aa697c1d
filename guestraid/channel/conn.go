package channel

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// FindPort finds the virtio-serial port called name: it scans
// <sysRoot>/class/virtio-ports/vport*/name (there is no udev in the image
// to make /dev/virtio-ports links) and returns /dev/<vportNpM> under
// devRoot.
func FindPort(sysRoot, devRoot, name string) (string, error) {
	matches, err := filepath.Glob(filepath.Join(sysRoot, "class", "virtio-ports", "vport*", "name"))
	if err != nil {
		return "", err
	}
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			continue // the port went away while we looked
		}
		if strings.TrimSpace(string(b)) == name {
			return filepath.Join(devRoot, filepath.Base(filepath.Dir(m))), nil
		}
	}
	return "", fmt.Errorf("virtio-serial port %s: %w", name, os.ErrNotExist)
}

// Open opens the channel spec names:
//
//	auto        the virtio-serial port PortName (os.ErrNotExist if absent)
//	unix:PATH   a unix stream socket (tests and manual use)
//	PATH        a character device or file, opened read-write
//
// "none" and "" return (nil, nil): no channel.
func Open(ctx context.Context, spec string) (io.ReadWriteCloser, error) {
	switch {
	case spec == "" || spec == "none":
		return nil, nil
	case spec == "auto":
		p, err := FindPort("/sys", "/dev", PortName)
		if err != nil {
			return nil, err
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("channel: %w", err)
		}
		return f, nil
	case strings.HasPrefix(spec, "unix:"):
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", strings.TrimPrefix(spec, "unix:"))
		if err != nil {
			return nil, fmt.Errorf("channel: %w", err)
		}
		return c, nil
	default:
		f, err := os.OpenFile(spec, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("channel: %w", err)
		}
		return f, nil
	}
}

// sendQueue is how many lines may wait for the host. A virtio-serial
// write blocks while no host process holds the other end open, so lines
// are written by a goroutine of their own and the newest are dropped when
// the queue is full: the watch loop must never stall on the host.
const sendQueue = 256

// Conn is a channel in use: Send queues a message, Incoming delivers
// decoded host messages (*Host, *Check). A nil *Conn is a channel that
// drops everything, so callers need not care whether there is one.
type Conn struct {
	rwc    io.ReadWriteCloser
	log    *slog.Logger
	out    chan []byte
	in     chan any
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	mu     sync.Mutex
	drops  int
	reopen bool
}

// NewConn starts the reader and writer goroutines on rwc. retryEOF says
// that end of file means "the host is not connected right now" (a
// virtio-serial port) rather than "gone for good" (a socket).
func NewConn(rwc io.ReadWriteCloser, retryEOF bool, log *slog.Logger) *Conn {
	c := &Conn{
		rwc:    rwc,
		log:    log,
		out:    make(chan []byte, sendQueue),
		in:     make(chan any, 16),
		done:   make(chan struct{}),
		reopen: retryEOF,
	}
	c.wg.Add(2)
	go c.writer()
	go c.reader()
	return c
}

// Send queues v (a State or an Event) as one line.
func (c *Conn) Send(v any) {
	if c == nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		c.log.Error("channel: encoding a message", "err", err)
		return
	}
	b = append(b, '\n')
	select {
	case <-c.done:
	case c.out <- b:
	default:
		c.mu.Lock()
		c.drops++
		n := c.drops
		c.mu.Unlock()
		if n == 1 || n%100 == 0 {
			c.log.Warn("channel: host is not reading, dropping messages", "dropped", n)
		}
	}
}

// Incoming delivers host messages; it is closed when the channel ends.
// A nil *Conn's Incoming is nil (blocks forever in a select).
func (c *Conn) Incoming() <-chan any {
	if c == nil {
		return nil
	}
	return c.in
}

// Flush waits up to d for queued messages to be written.
func (c *Conn) Flush(d time.Duration) {
	if c == nil {
		return
	}
	deadline := time.Now().Add(d)
	for len(c.out) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// Close stops the goroutines and closes the underlying file or socket.
func (c *Conn) Close() error {
	if c == nil {
		return nil
	}
	var err error
	c.once.Do(func() {
		close(c.done)
		err = c.rwc.Close()
	})
	c.wg.Wait()
	return err
}

func (c *Conn) writer() {
	defer c.wg.Done()
	for {
		select {
		case <-c.done:
			return
		case b := <-c.out:
			if _, err := c.rwc.Write(b); err != nil {
				select {
				case <-c.done:
					return
				default:
				}
				c.log.Warn("channel: write failed", "err", err)
				time.Sleep(time.Second) // the host end may come back
			}
		}
	}
}

func (c *Conn) reader() {
	defer c.wg.Done()
	defer close(c.in)
	r := bufio.NewReaderSize(c.rwc, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if len(strings.TrimSpace(string(line))) > 0 {
			c.deliver(line)
		}
		if err == nil {
			continue
		}
		select {
		case <-c.done:
			return
		default:
		}
		if errors.Is(err, io.EOF) && c.reopen {
			// No host process on the port's other end; it may come.
			select {
			case <-c.done:
				return
			case <-time.After(time.Second):
			}
			r.Reset(c.rwc)
			continue
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) && !errors.Is(err, net.ErrClosed) {
			c.log.Warn("channel: read failed", "err", err)
		}
		return
	}
}

func (c *Conn) deliver(line []byte) {
	v, err := Decode(line)
	if err != nil {
		c.log.Warn("channel: ignoring a message", "err", err)
		return
	}
	switch m := v.(type) {
	case *Host:
		if err := m.Validate(); err != nil {
			c.log.Warn("channel: ignoring host message", "err", err)
			return
		}
	case *Check:
	default:
		c.log.Warn("channel: ignoring a guest-side message from the host", "type", fmt.Sprintf("%T", v))
		return
	}
	select {
	case c.in <- v:
	case <-c.done:
	}
}

// ReadHostFile reads host info from a file (fw_cfg or --host-info).
func ReadHostFile(path string) (*Host, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	h, err := ParseHost(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return h, nil
}
