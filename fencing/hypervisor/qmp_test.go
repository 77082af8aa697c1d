package hypervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// qmpScript serves one QMP connection on a real unix socket: the greeting,
// then for each command the lines script returns (with "ID" replaced by
// the command's id), so events can be put before and between replies the
// way qemu sends them. The real qemu is in qemu_test.go; this covers the
// orderings qemu produces only by chance.
func qmpScript(t *testing.T, script func(cmd string) []string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "qmp-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "qmp.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		w := bufio.NewWriter(c)
		// An event before the greeting is not something qemu does, but
		// one right after it is.
		w.WriteString(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}` + "\n")
		w.WriteString(`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "NIC_RX_FILTER_CHANGED", "data": {}}` + "\n")
		w.Flush()
		dec := json.NewDecoder(c)
		for {
			var req struct {
				Execute string          `json:"execute"`
				ID      json.RawMessage `json:"id"`
			}
			if err := dec.Decode(&req); err != nil {
				return
			}
			for _, line := range script(req.Execute) {
				b := bytes.ReplaceAll([]byte(line), []byte(`"ID"`), req.ID)
				w.Write(append(b, '\n'))
			}
			w.Flush()
		}
	}()
	return path
}

func TestQMPEventsInterleaved(t *testing.T) {
	path := qmpScript(t, func(cmd string) []string {
		switch cmd {
		case "qmp_capabilities":
			return []string{`{"return": {}, "id": "ID"}`}
		case "query-status":
			return []string{
				`{"timestamp": {"seconds": 3, "microseconds": 0}, "event": "RTC_CHANGE", "data": {"offset": 1}}`,
				`{"return": {"status": "running", "singlestep": false, "running": true}, "id": "ID"}`,
			}
		case "system_powerdown":
			return []string{
				`{"return": {}, "id": "ID"}`,
				`{"timestamp": {"seconds": 4, "microseconds": 0}, "event": "POWERDOWN"}`,
			}
		case "nope":
			return []string{`{"id": "ID", "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}`}
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, path)
	require.NoError(t, err)
	defer q.Close()

	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	require.NoError(t, q.Execute(ctx, "query-status", nil, &st))
	assert.Equal(t, "running", st.Status)
	assert.True(t, st.Running)
	require.NoError(t, q.Execute(ctx, "system_powerdown", nil, nil))

	err = q.Execute(ctx, "nope", map[string]any{"x": 1}, nil)
	var qe *QMPError
	require.ErrorAs(t, err, &qe)
	assert.Equal(t, "CommandNotFound", qe.Class)
	assert.Equal(t, "nope", qe.Command)

	// The POWERDOWN event came after its reply; it is read with the next
	// command's.
	var names []string
	for _, ev := range q.Events() {
		names = append(names, ev.Event)
	}
	assert.Equal(t, []string{"NIC_RX_FILTER_CHANGED", "RTC_CHANGE", "POWERDOWN"}, names)
	assert.Empty(t, q.Events())
}

func TestQMPContextEnds(t *testing.T) {
	path := qmpScript(t, func(cmd string) []string {
		if cmd == "qmp_capabilities" {
			return []string{`{"return": {}, "id": "ID"}`}
		}
		return nil // never answers
	})
	q, err := DialQMP(t.Context(), path)
	require.NoError(t, err)
	defer q.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = q.Execute(ctx, "query-status", nil, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 3*time.Second)
}
