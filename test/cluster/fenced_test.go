package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
)

// TestNodeConfigs: every host gets its own copy of the cluster file that
// differs only in its run and fenced state directories, with the fencing
// and timeouts options in all of them.
func TestNodeConfigs(t *testing.T) {
	c := NewT(t, Options{Nodes: 2, Witness: true,
		Fencing:  []string{"auto_failover: true", "monitor_interval: 2s"},
		Timeouts: []string{"lease_ttl: 12s"}})
	main, err := os.ReadFile(c.ConfigPath)
	require.NoError(t, err)
	for _, h := range c.Hosts() {
		cfg, err := configs.Load(h.ConfigPath())
		require.NoError(t, err, h.Name)
		assert.Equal(t, h.RunDir(), cfg.Hypervisor.RunDir, h.Name)
		assert.Equal(t, filepath.Join(h.StateDir(), "fenced"), cfg.Fencing.StateDir, h.Name)
		assert.True(t, cfg.Fencing.AutoFailover)
		assert.Equal(t, 2*time.Second, cfg.Fencing.MonitorInterval)
		assert.Equal(t, 12*time.Second, cfg.Timeouts.LeaseTTL)
		b, err := os.ReadFile(h.ConfigPath())
		require.NoError(t, err)
		// Same file but for those two lines.
		replaced := strings.NewReplacer(strconv.Quote(h.RunDir()), strconv.Quote(c.path("run")),
			strconv.Quote(filepath.Join(h.StateDir(), "fenced")), strconv.Quote(c.path("state", "fenced"))).Replace(string(b))
		assert.Equal(t, string(main), replaced, h.Name)
	}
	assert.True(t, c.Config.Fencing.AutoFailover)
}

// TestClusterTLS: Options.TLS makes the certificates with mhcodi cluster
// init and points every node's file at them.
func TestClusterTLS(t *testing.T) {
	c := NewT(t, Options{Nodes: 2, Witness: true, TLS: true})
	for _, h := range c.Hosts() {
		cfg, err := configs.Load(h.ConfigPath())
		require.NoError(t, err, h.Name)
		assert.Equal(t, c.TLSDir(), cfg.Security.TLSDir)
		// The file names of mhcodi cluster init (fencing/certs).
		assert.FileExists(t, filepath.Join(c.TLSDir(), h.Name+".crt"))
		assert.FileExists(t, filepath.Join(c.TLSDir(), h.Name+".key"))
	}
	assert.FileExists(t, filepath.Join(c.TLSDir(), "ca.crt"))
}

// startOrphan starts sleep inside h as an orphan (it is no child of this
// process, like a daemonized qemu) and writes its PID to file.
func startOrphan(t *testing.T, h *Host, file string) int {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o755))
	out, err := h.Exec(t.Context(), "sh", "-c", `setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $! > "$1"; echo $!`, "sh", file).CombinedOutput()
	require.NoError(t, err, string(out))
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	require.NoError(t, err, string(out))
	return pid
}

// TestTrackGuests: processes named by pid files in a host's guest run
// directories are tracked (once), stale and foreign pid files are
// skipped, Kill ends tracked ones, and teardown tracks and ends what was
// never tracked (as a fenced's guests started after the last scan).
func TestTrackGuests(t *testing.T) {
	c := NewT(t, Options{Nodes: 2})
	a, b := c.Host("node-a"), c.Host("node-b")
	qemu := startOrphan(t, a, filepath.Join(a.RunDir(), "demo", "qemu.pid"))
	bridge := startOrphan(t, a, filepath.Join(a.RunDir(), "demo", "bridge.pid"))
	// Not in node-a's namespace: this test process itself.
	require.NoError(t, os.WriteFile(filepath.Join(a.RunDir(), "demo", "other.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600))
	// Gone: a pid file that outlived its process.
	require.NoError(t, os.MkdirAll(filepath.Join(a.RunDir(), "old"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(a.RunDir(), "old", "qemu.pid"), []byte("999999999\n"), 0o600))

	procs, err := a.TrackGuests()
	require.NoError(t, err)
	names := map[string]int{}
	for _, p := range procs {
		names[p.Name] = p.PID
	}
	assert.Equal(t, map[string]int{"demo-qemu": qemu, "demo-bridge": bridge}, names)
	again, err := a.TrackGuests()
	require.NoError(t, err)
	assert.ElementsMatch(t, procs, again, "a second scan tracks nothing new")
	assert.Len(t, a.Procs(), 2)

	require.NoError(t, a.Kill())
	assert.False(t, ProcAlive(ProcState{PID: qemu, Start: procs[0].start}), "Kill ended the tracked guest")
	assert.Empty(t, a.Procs())

	// Left untracked: teardown must find and end it, not report a leak.
	late := startOrphan(t, b, filepath.Join(b.RunDir(), "demo", "qemu.pid"))
	start, _, err := procStart(late)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	assert.False(t, ProcAlive(ProcState{PID: late, Start: start}))
}

// TestStartFencedAndCLI runs a stand-in fenced (a shell that serves
// GET /v1/node on its socket through this test) to check the plumbing:
// the command line, readiness on the socket, Revive, and the CLI's
// flags. The real fenced is tested in test/fencing_e2e_test.go.
func TestStartFencedAndCLI(t *testing.T) {
	c := NewT(t, Options{Nodes: 1, BinDir: fakeBin(t)})
	a := c.Host("node-a")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	p, err := a.StartFenced(ctx, "--extra")
	require.NoError(t, err)
	b, err := os.ReadFile(a.LogPath(FencedName))
	require.NoError(t, err)
	assert.Contains(t, string(b), fmt.Sprintf("args: --config %s --node node-a --socket %s --metrics off --targetd-socket %s --extra", a.ConfigPath(), a.FencedSocket(), a.TargetdControl()))

	// Killed and revived: it answers again.
	require.NoError(t, a.Kill())
	require.True(t, p.Exited())
	require.NoError(t, a.Revive(ctx))
	require.NotNil(t, a.Proc(FencedName))
	require.NoError(t, c.pingSocket(ctx, a.FencedSocket()))

	res, err := a.CLI(ctx, "guest", "start", "demo")
	require.NoError(t, err)
	assert.Equal(t, 3, res.Code, res.String())
	assert.Equal(t, fmt.Sprintf("guest start demo --config %s --node node-a --socket %s\n", a.ConfigPath(), a.FencedSocket()), res.Stdout)
	assert.Equal(t, "refused\n", res.Stderr)

	require.NoError(t, a.StopFenced())
	assert.Nil(t, a.Proc(FencedName))
}

// fakeBin is a bin directory whose mhcodi-fenced is a stand-in: it logs
// its arguments and serves GET /v1/node on its --socket through a server
// of this test process (the shell has no HTTP server), and whose mhcodi
// echoes its arguments and exits 3.
func fakeBin(t *testing.T) string {
	dir := t.TempDir()
	fenced := `#!/bin/sh
echo "args: $*"
sock=""
while [ $# -gt 0 ]; do [ "$1" = --socket ] && sock="$2"; shift; done
echo "$sock" >> ` + filepath.Join(dir, "sockets") + `
exec sleep 600
`
	cli := "#!/bin/sh\necho \"$*\"\necho refused >&2\nexit 3\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "mhcodi-fenced"), []byte(fenced), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "mhcodi"), []byte(cli), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "mhcodi-targetd"), []byte("#!/bin/sh\nexit 1\n"), 0o755))
	// The stand-in's socket: served from here for every path the fake
	// announces.
	go serveSockets(t, filepath.Join(dir, "sockets"))
	return dir
}

// serveSockets serves GET /v1/node on every socket path appended to list
// (anew for every line: a revived stand-in announces its path again),
// until the test ends.
func serveSockets(t *testing.T, list string) {
	served := 0
	for {
		select {
		case <-t.Context().Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
		b, _ := os.ReadFile(list)
		lines := strings.Fields(string(b))
		for _, s := range lines[min(served, len(lines)):] {
			served++
			_ = os.Remove(s)
			l, err := net.Listen("unix", s)
			if err != nil {
				continue
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != api.PathNode {
					http.NotFound(w, r)
					return
				}
				_, _ = w.Write([]byte(`{"node":"node-a"}`))
			})}
			go func() { _ = srv.Serve(l) }()
			t.Cleanup(func() { srv.Close() })
		}
	}
}
