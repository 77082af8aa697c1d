package targetd

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sort"

	"github.com/mhcodi/mhcodi/targetd/controlapi"
)

// The control API (its contract, the messages and the client, is package
// controlapi): HTTP/JSON on a unix socket that only root can open.

// Exports lists the exports.
func (d *Daemon) Exports() []controlapi.ExportInfo {
	sessions := map[string]int{}
	for _, s := range d.srv.Sessions() {
		sessions[s.Target]++
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]controlapi.ExportInfo, 0, len(d.exports))
	for iqn, e := range d.exports {
		info := controlapi.ExportInfo{
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
		var req controlapi.FenceRequest
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
		case errors.Is(err, controlapi.ErrStaleEpoch):
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
