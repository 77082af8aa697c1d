package hypervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// QMP is a client of one QEMU Machine Protocol socket: JSON objects, one
// per line, over a unix socket. The server greets, the client negotiates
// capabilities with qmp_capabilities, then sends {"execute", "arguments",
// "id"} and reads lines until the reply with its id; asynchronous events
// ({"event": …}) may arrive at any time, before or between replies, and
// are kept for Events.
//
// QEMU serves one client per QMP socket at a time, so a QMP is meant to be
// short-lived: dial, run a few commands, close.
type QMP struct {
	conn net.Conn
	r    *bufio.Reader

	mu     sync.Mutex // one command at a time
	nextID int
	events []QMPEvent
}

// QMPEvent is an asynchronous event QEMU sent.
type QMPEvent struct {
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data,omitempty"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// QMPError is an error reply from QEMU.
type QMPError struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// qmpMessage is any line QEMU sends.
type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *QMPError       `json:"error"`
	Event  string          `json:"event"`
	ID     json.RawMessage `json:"id"`
}

// DialQMP connects to the QMP socket at path and negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %s: %w", path, err)
	}
	q := &QMP{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	if err := q.handshake(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp %s: %w", path, err)
	}
	return q, nil
}

func (q *QMP) handshake(ctx context.Context) error {
	stop := q.deadline(ctx)
	defer stop()
	for {
		m, raw, err := q.read()
		if err != nil {
			return fmt.Errorf("reading the greeting: %w", err)
		}
		if m.QMP != nil {
			break
		}
		if m.Event != "" {
			q.keepEvent(raw)
			continue
		}
		return fmt.Errorf("expected the QMP greeting, got %s", raw)
	}
	stop()
	return q.Execute(ctx, "qmp_capabilities", nil, nil)
}

// deadline makes ctx's end interrupt reads and writes on the connection;
// the returned function undoes that.
func (q *QMP) deadline(ctx context.Context) func() {
	if dl, ok := ctx.Deadline(); ok {
		_ = q.conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = q.conn.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		_ = q.conn.SetDeadline(time.Time{})
	}
}

func (q *QMP) read() (qmpMessage, []byte, error) {
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		if errors.Is(err, io.EOF) && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return qmpMessage{}, nil, err
	}
	var m qmpMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return qmpMessage{}, nil, fmt.Errorf("bad QMP line %q: %w", line, err)
	}
	return m, line, nil
}

func (q *QMP) keepEvent(raw []byte) {
	var ev QMPEvent
	if json.Unmarshal(raw, &ev) == nil {
		q.events = append(q.events, ev)
	}
}

// Execute runs command with args (nil for none) and decodes its return
// value into out (nil to ignore it). Events read on the way are kept.
func (q *QMP) Execute(ctx context.Context, command string, args any, out any) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	stop := q.deadline(ctx)
	defer stop()
	q.nextID++
	id := fmt.Sprintf("mhcodi-%d", q.nextID)
	req := map[string]any{"execute": command, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", command, q.ctxErr(ctx, err))
	}
	want, _ := json.Marshal(id)
	for {
		m, raw, err := q.read()
		if err != nil {
			return fmt.Errorf("qmp %s: %w", command, q.ctxErr(ctx, err))
		}
		switch {
		case m.Event != "":
			q.keepEvent(raw)
			continue
		case string(m.ID) != string(want):
			// A reply to someone else's command cannot happen on our
			// own connection; skip rather than misattribute it.
			continue
		case m.Error != nil:
			m.Error.Command = command
			return m.Error
		}
		if out != nil && m.Return != nil {
			if err := json.Unmarshal(m.Return, out); err != nil {
				return fmt.Errorf("qmp %s: decoding %s: %w", command, m.Return, err)
			}
		}
		return nil
	}
}

// ctxErr prefers the context's error to the deadline error it caused.
func (q *QMP) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", context.Cause(ctx), err)
	}
	// The socket's deadline is the context's, and may fire a moment
	// before the context notices.
	if dl, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(dl) {
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

// Events returns the events received so far and forgets them.
func (q *QMP) Events() []QMPEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	ev := q.events
	q.events = nil
	return ev
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }
