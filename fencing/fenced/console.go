package fenced

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/internal/console"
)

// handleConsole serves api.PathConsole: the console of a guest that runs
// here, spliced to the upgraded connection for as long as it lasts (the
// console lock held, so a second attach, local or relayed, is refused);
// for the local CLI, the console of a guest that runs on another node,
// relayed from that node's fenced.
func (s *Server) handleConsole(w http.ResponseWriter, r *http.Request) {
	guest := r.PathValue("guest")
	if !strings.EqualFold(r.Header.Get("Upgrade"), api.ConsoleProtocol) {
		writeError(w, http.StatusBadRequest, "the console needs Upgrade: %s", api.ConsoleProtocol)
		return
	}
	if _, ok := s.cfg.Guest(guest); !ok {
		writeError(w, http.StatusNotFound, "guest %q is not in the cluster file", guest)
		return
	}
	var st hypervisor.Status
	err := hypervisor.ErrNotRunning
	if !s.witness {
		sctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		st, err = s.driver.Status(sctx, guest)
		cancel()
	}
	var stream io.ReadWriteCloser
	from := s.self
	switch {
	case err == nil && st.ConsoleSocket == "":
		writeError(w, http.StatusNotImplemented, "%s runs on %s, but its hypervisor's console is not relayed (xen: run xl console %s there)", guest, s.self, guest)
		return
	case err == nil:
		unlock, lerr := console.Lock(filepath.Dir(st.ConsoleSocket))
		if lerr != nil {
			code := http.StatusInternalServerError
			if errors.Is(lerr, console.ErrBusy) {
				code = http.StatusConflict
			}
			writeError(w, code, "%s's console on %s: %v", guest, s.self, lerr)
			return
		}
		defer unlock()
		var d net.Dialer
		dctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		c, derr := d.DialContext(dctx, "unix", st.ConsoleSocket)
		cancel()
		if derr != nil {
			writeError(w, http.StatusBadGateway, "%s's console on %s: %v", guest, s.self, derr)
			return
		}
		stream = c
	case !errors.Is(err, hypervisor.ErrNotRunning):
		writeError(w, http.StatusInternalServerError, "%s on %s: %v", guest, s.self, err)
		return
	case identityOf(r) != identityLocal:
		// Relays go one hop: another node asks only the node that runs it.
		writeError(w, http.StatusNotFound, "%s does not run on %s", guest, s.self)
		return
	default:
		node, rerr := s.whereRuns(r.Context(), guest)
		if rerr != nil {
			writeError(w, http.StatusNotFound, "%v", rerr)
			return
		}
		cc, ok := s.client(node).(api.ConsoleClient)
		if !ok {
			writeError(w, http.StatusNotImplemented, "%s's client cannot relay a console", node)
			return
		}
		rs, cerr := cc.Console(r.Context(), guest)
		if cerr != nil {
			code := api.StatusOf(cerr)
			if code == 0 {
				code = http.StatusBadGateway
			}
			writeError(w, code, "relaying %s's console from %s: %v", guest, node, cerr)
			return
		}
		stream, from = rs, node
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		stream.Close()
		writeError(w, http.StatusInternalServerError, "this connection cannot be upgraded")
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		stream.Close()
		s.log.Warn("console: hijack", "guest", guest, "err", err)
		return
	}
	_ = conn.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(buf, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", api.ConsoleProtocol); err != nil || buf.Flush() != nil {
		conn.Close()
		stream.Close()
		return
	}
	s.log.Info("console attached", "guest", guest, "on", from, "by", identityOf(r))
	// What the client sent after its request, if anything, is in buf.
	var client io.ReadWriteCloser = conn
	if n := buf.Reader.Buffered(); n > 0 {
		client = bufferedConn{Conn: conn, r: io.MultiReader(io.LimitReader(buf.Reader, int64(n)), conn)}
	}
	console.Splice(client, stream)
	s.log.Info("console detached", "guest", guest, "on", from, "by", identityOf(r))
}

type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (b bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// whereRuns asks the other nodes which one runs guest.
func (s *Server) whereRuns(ctx context.Context, guest string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var down []string
	for _, n := range s.peers() {
		st, err := s.client(n).NodeStatus(ctx)
		if err != nil {
			down = append(down, n)
			continue
		}
		for _, g := range st.Guests {
			if g.Name == guest {
				return n, nil
			}
		}
	}
	msg := fmt.Sprintf("%s does not run on any node that answers", guest)
	if len(down) > 0 {
		msg += fmt.Sprintf(" (%s did not answer)", strings.Join(down, ", "))
	}
	return "", errors.New(msg)
}
