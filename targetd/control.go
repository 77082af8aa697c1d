package targetd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/mhcodi/mhcodi/targetd/iscsi"
)

// The control API: HTTP/JSON on a unix socket that only root can open. The
// fencing daemon uses it to fence a guest's legs to their new owner.
//
//	GET  /v1/sessions                       logged-in sessions
//	GET  /v1/exports                        exports with owner and epoch
//	POST /v1/fence {guest, disk, owner, epoch}
//	GET  /debug/pprof/...                   Go profiles

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

// Exports lists the exports.
func (d *Daemon) Exports() []ExportInfo {
	sessions := map[string]int{}
	for _, s := range d.srv.Sessions() {
		sessions[s.Target]++
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]ExportInfo, 0, len(d.exports))
	for iqn, e := range d.exports {
		info := ExportInfo{
			Target: iqn, Guest: e.leg.Guest, Disk: e.leg.Disk, Volume: e.vol.Path(),
			Size: e.vol.Size(), Fence: d.fence.get(iqn), Sessions: sessions[iqn],
		}
		if err := e.vol.SyncErr(); err != nil {
			info.SyncError = err.Error()
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target < out[j].Target })
	return out
}

// FenceRequest is the body of POST /v1/fence.
type FenceRequest struct {
	Guest string `json:"guest"`
	Disk  string `json:"disk,omitempty"`
	Owner string `json:"owner"` // node name
	Epoch uint64 `json:"epoch"`
}

// ControlHandler serves the control API.
func (d *Daemon) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.srv.Sessions())
	})
	mux.HandleFunc("GET /v1/exports", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.Exports())
	})
	mux.HandleFunc("POST /v1/fence", func(w http.ResponseWriter, r *http.Request) {
		var req FenceRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad request: " + err.Error()})
			return
		}
		if req.Guest == "" || req.Owner == "" || req.Epoch == 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "guest, owner and a non-zero epoch are required"})
			return
		}
		res, err := d.Fence(req.Guest, req.Disk, req.Owner, req.Epoch)
		switch {
		case errors.Is(err, ErrStaleEpoch):
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
		case err != nil:
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": err.Error()})
		default:
			writeJSON(w, http.StatusOK, res)
		}
	})
	// Profiles for the operator chasing a slow disk; the socket is
	// root-only, like everything else here.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// ListenControl opens the control socket at path, mode 0600, replacing a
// stale socket file.
func ListenControl(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s is in use: is another targetd running?", path)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
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
func (c *ControlClient) Sessions(ctx context.Context) ([]iscsi.SessionInfo, error) {
	var out []iscsi.SessionInfo
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
