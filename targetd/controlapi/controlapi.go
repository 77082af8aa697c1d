// Package controlapi is the contract of targetd's control API: its
// messages, the client the fencing daemon and the tests use, and the write
// log's records. Callers import it, not package targetd, so they do not link
// the target daemon (package targetd serves it).
//
// The control API: HTTP/JSON on a unix socket that only root can open. The
// fencing daemon uses it to fence a guest's legs to their new owner.
//
//	GET  /v1/sessions                       logged-in sessions
//	GET  /v1/exports                        exports with owner and epoch
//	POST /v1/fence {guest, disk, owner, epoch}
//	GET  /debug/pprof/...                   Go profiles
package controlapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// ExportInfo describes one export for the control API.
type ExportInfo struct {
	Target   string     `json:"target"`
	Guest    string     `json:"guest"`
	Disk     string     `json:"disk"`
	Volume   string     `json:"volume"`
	Size     int64      `json:"size"`
	Fence    FenceState `json:"fence"`
	Sessions int        `json:"sessions"`
	// SyncError is the failed fdatasync that latched the export's volume:
	// from then on every write and sync of it fails, until targetd is
	// restarted (see volume.Volume.Sync). Empty while healthy.
	SyncError string `json:"sync_error,omitempty"`
}

// FenceRequest is the body of POST /v1/fence.
type FenceRequest struct {
	Guest string `json:"guest"`
	Disk  string `json:"disk,omitempty"`
	Owner string `json:"owner"` // node name
	Epoch uint64 `json:"epoch"`
}

// FenceState is who may use an export, and at which fencing epoch.
type FenceState struct {
	// Owner is the only initiator IQN admitted; empty admits every node.
	Owner string `json:"owner,omitempty"`
	// Epoch is the fencing token of the last restriction; it only grows.
	Epoch uint64    `json:"epoch"`
	Since time.Time `json:"since,omitempty"`
}

// FenceResult says what a Fence call did.
type FenceResult struct {
	Targets []string `json:"targets"`
	Dropped int      `json:"dropped_sessions"`
}

// ErrStaleEpoch refuses a fencing request older than what targetd holds.
var ErrStaleEpoch = errors.New("stale fencing epoch")

// SessionInfo describes one logged-in session (GET /v1/sessions).
type SessionInfo struct {
	TSIH       uint16    `json:"tsih"`
	Initiator  string    `json:"initiator"`
	ISID       string    `json:"isid"`
	Target     string    `json:"target"`
	Remote     string    `json:"remote"`
	Since      time.Time `json:"since"`
	Discovery  bool      `json:"discovery"`
	CHAP       bool      `json:"chap"`
	MutualCHAP bool      `json:"mutual_chap"`
	Digests    string    `json:"digests"`
	Tasks      int       `json:"tasks"`
	// The CmdSN window: commands in flight and what the session took in.
	InFlight uint32 `json:"in_flight"`
	ExpCmdSN uint32 `json:"exp_cmd_sn"`
	MaxCmdSN uint32 `json:"max_cmd_sn"`
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

// ControlClient talks to a targetd's control socket.
type ControlClient struct {
	c *http.Client
}

// NewControlClient returns a client for the socket at path.
func NewControlClient(path string) *ControlClient {
	return &ControlClient{c: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

func (c *ControlClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://targetd"+path, rd)
	if err != nil {
		return err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.c.Do(req)
	if err != nil {
		return fmt.Errorf("targetd control: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		err := fmt.Errorf("targetd control %s %s: %s: %s", method, path, resp.Status, e.Error)
		if resp.StatusCode == http.StatusConflict {
			err = fmt.Errorf("%w (%v)", ErrStaleEpoch, err)
		}
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Sessions lists the sessions.
func (c *ControlClient) Sessions(ctx context.Context) ([]SessionInfo, error) {
	var out []SessionInfo
	return out, c.do(ctx, http.MethodGet, "/v1/sessions", nil, &out)
}

// Exports lists the exports.
func (c *ControlClient) Exports(ctx context.Context) ([]ExportInfo, error) {
	var out []ExportInfo
	return out, c.do(ctx, http.MethodGet, "/v1/exports", nil, &out)
}

// Fence fences a guest's legs.
func (c *ControlClient) Fence(ctx context.Context, req FenceRequest) (FenceResult, error) {
	var out FenceResult
	return out, c.do(ctx, http.MethodPost, "/v1/fence", req, &out)
}
