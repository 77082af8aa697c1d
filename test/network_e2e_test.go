package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mhcodi/mhcodi/internal/syncbuf"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/guestraid/boot"
	"github.com/mhcodi/mhcodi/internal/console"
	"github.com/mhcodi/mhcodi/naming"
	"github.com/mhcodi/mhcodi/test/cluster"
	"github.com/mhcodi/mhcodi/test/guesttest"
)

// TestGuestNetwork (issue 15): the guest has a NIC on the service
// network. Its start is refused while node-a lacks the bridge. It boots on
// node-a; the client namespace pings it, finds the MAC derived from the
// names and opens a TCP connection to it. Its serial console is attached
// through a pty (a second attach is refused), answers a command and is
// detached with Ctrl-] while the guest keeps running. A failover to node-b
// while node-b lacks the bridge is refused before the epoch moves; with
// the bridge back, a planned failover moves it and it answers again (ping
// and TCP) with the same MAC, its tap gone from node-a, and its console is
// attached from node-a, relayed by the two fenceds.
func TestGuestNetwork(t *testing.T) {
	fencingBinaries(t)
	img := guestImage(t)
	o := guesttest.MirrorOptions(img, e2eDiskSize, "", nil)
	o.ServiceNetwork = true
	o.Guests[0].NICs = []configs.NIC{{Network: cluster.ServiceNetwork, Address: ".50"}}
	o.TLS = true
	o.Keep = os.Getenv("MHCODI_KEEP_CLUSTER") != ""
	c := cluster.NewT(t, o)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	r := startFencing(t, ctx, c)
	addr := c.ServiceAddr(50).Addr()
	mac := naming.MAC(c.Config.Cluster.Name, "demo", cluster.ServiceNetwork).String()
	tap := naming.TapName("demo", cluster.ServiceNetwork)

	// node-a without its bridge: the first start is refused before the
	// ledger has a record of the guest, naming the bridge.
	require.NoError(t, r.a.SetServiceBridge(ctx, false))
	res := r.cli(ctx, r.a, "guest", "start", "demo")
	assert.Equal(t, 1, res.Code, "%s", res)
	assert.Contains(t, res.Stderr, "node-a cannot carry demo's NICs: NIC svc (network svc): bridge br-svc does not exist")
	_, err := record(ctx, r.a)
	assert.ErrorContains(t, err, "no record of demo", "the refused start wrote nothing")
	require.NoError(t, r.a.SetServiceBridge(ctx, true))

	begin := time.Now()
	r.startGuest(ctx, r.a)
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Minute)
	answered, err := c.WaitPing(pctx, addr)
	pcancel()
	require.NoError(t, err, "the guest never answered a ping on %s", addr)
	t.Logf("FIGURE guest_boot_to_ping_s=%.1f: from mhcodi guest start to the first ping answered (TCG)", answered.Sub(begin).Seconds())
	got, err := c.ClientNeighbour(ctx, addr)
	require.NoError(t, err)
	assert.Equal(t, mac, got, "the client sees the derived MAC")
	echo(ctx, t, c, addr)
	assert.True(t, linkExists(ctx, t, r.a, tap), "node-a has the guest's tap %s", tap)

	// The console: attach, talk to the guest, a second attach is
	// refused, Ctrl-] detaches.
	con := attachConsole(ctx, t, r.a)
	con.expect(t, "Connected to demo's serial console on node-a")
	con.send(t, "\r")
	con.expect(t, "guest# ")
	con.send(t, "ip\r")
	con.expect(t, mac+" up "+c.ServiceAddr(50).String())
	second := r.cli(ctx, r.a, "guest", "console", "demo")
	assert.Equal(t, 1, second.Code, "a second attach is refused: %s", second)
	assert.Contains(t, second.Stderr, "the console is attached elsewhere (by pid ")
	con.send(t, string([]byte{console.Escape}))
	con.wait(t)
	con.expect(t, "Detached from demo's console; demo keeps running.")
	assert.Zero(t, con.code, "console exit: %s", con.out.String())
	_, err = c.Ping(ctx, addr, 2*time.Second)
	require.NoError(t, err, "the guest answers after the console detached")
	log, err := os.ReadFile(r.a.RunDir() + "/demo/console.log")
	require.NoError(t, err)
	assert.Contains(t, string(log), mac+" up "+c.ServiceAddr(50).String(), "the console log kept being written while attached")

	// node-b without its bridge: the failover is refused before the
	// ledger changes, naming the bridge, and verify says so.
	before, err := record(ctx, r.a)
	require.NoError(t, err)
	require.NoError(t, r.b.SetServiceBridge(ctx, false))
	res = r.cli(ctx, r.a, "guest", "failover", "demo", "--to", "node-b")
	assert.Equal(t, 1, res.Code, "%s", res)
	assert.Contains(t, res.Stderr, "node-b cannot carry demo's NICs: NIC svc (network svc): bridge br-svc does not exist")
	after, err := record(ctx, r.a)
	require.NoError(t, err)
	assert.Equal(t, before, after, "the ledger is left as it was")
	ver := r.cli(ctx, r.a, "verify")
	assert.Contains(t, ver.Stdout+ver.Stderr, "node-b cannot run demo: NIC svc (network svc): bridge br-svc does not exist")
	_, err = c.Ping(ctx, addr, 2*time.Second)
	require.NoError(t, err, "the guest still runs on node-a")
	require.NoError(t, r.b.SetServiceBridge(ctx, true))

	// The planned failover: the same MAC answers from node-b.
	require.NoError(t, c.FlushClientNeighbours(ctx))
	begin = time.Now()
	res = r.cli(ctx, r.b, "guest", "failover", "demo", "--to", "node-b")
	require.Zero(t, res.Code, "%s", res)
	pctx, pcancel = context.WithTimeout(ctx, 2*time.Minute)
	answered, err = c.WaitPing(pctx, addr)
	pcancel()
	require.NoError(t, err, "the guest never answered on node-b")
	t.Logf("FIGURE failover_to_ping_s=%.1f: from mhcodi guest failover to the first ping answered from node-b (TCG; command %.1f s)",
		answered.Sub(begin).Seconds(), res.Took.Seconds())
	got, err = c.ClientNeighbour(ctx, addr)
	require.NoError(t, err)
	assert.Equal(t, mac, got, "the guest keeps its MAC across the failover")
	echo(ctx, t, c, addr)
	assert.False(t, linkExists(ctx, t, r.a, tap), "node-a's tap went with the guest")
	assert.True(t, linkExists(ctx, t, r.b, tap), "node-b has the guest's tap")

	// The console from node-a, relayed by the fenceds from node-b; the
	// runner's own attach is refused meanwhile.
	con = attachConsole(ctx, t, r.a)
	con.expect(t, "relayed by node-a's mhcodi-fenced")
	con.send(t, "\r")
	con.expect(t, "guest# ")
	con.send(t, "hostname\r")
	con.expect(t, "\ndemo\r")
	second = r.cli(ctx, r.b, "guest", "console", "demo")
	assert.Equal(t, 1, second.Code, "an attach on node-b while node-a's is relayed is refused: %s", second)
	assert.Contains(t, second.Stderr, "the console is attached elsewhere")
	con.send(t, string([]byte{console.Escape}))
	con.wait(t)
	con.expect(t, "Detached from demo's console; demo keeps running.")
	_, err = c.Ping(ctx, addr, 2*time.Second)
	require.NoError(t, err, "the guest answers after the relayed console detached")
	for _, h := range c.Hosts() {
		_, _ = h.TrackGuests()
	}
}

// echo opens a TCP connection from the client to the guest's echo
// service and has a line said back.
func echo(ctx context.Context, t *testing.T, c *cluster.Cluster, addr netip.Addr) {
	t.Helper()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The guest answers pings as soon as its NIC has its address; the
	// echo service starts a moment later.
	var conn net.Conn
	var err error
	for {
		if conn, err = c.DialClient(dctx, netip.AddrPortFrom(addr, boot.EchoPort)); err == nil || dctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.NoError(t, err, "TCP to the guest's echo service")
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Write([]byte("mhcodi\n"))
	require.NoError(t, err)
	b := make([]byte, 7)
	_, err = io.ReadFull(conn, b)
	require.NoError(t, err)
	assert.Equal(t, "mhcodi\n", string(b))
}

func linkExists(ctx context.Context, t *testing.T, h *cluster.Host, name string) bool {
	t.Helper()
	return h.Exec(ctx, "ip", "link", "show", "dev", name).Run() == nil
}

// ptyConsole is `mhcodi guest console demo` on a host, on a pty.
type ptyConsole struct {
	master *os.File
	cmd    *exec.Cmd
	out    syncbuf.Buffer
	done   chan struct{}
	code   int
}

// openPTY opens a pseudo-terminal pair (no library: /dev/ptmx).
func openPTY() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("unlockpt: %w", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("ptsname: %w", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, s, nil
}

func attachConsole(ctx context.Context, t *testing.T, h *cluster.Host) *ptyConsole {
	t.Helper()
	m, s, err := openPTY()
	require.NoError(t, err)
	p := &ptyConsole{master: m, done: make(chan struct{})}
	p.cmd = h.Exec(ctx, h.CLIArgv("guest", "console", "demo")...)
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = s, s, s
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	require.NoError(t, p.cmd.Start())
	s.Close()
	go func() { _, _ = ioCopy(&p.out, m) }()
	go func() {
		err := p.cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		m.Close()
	})
	return p
}

func ioCopy(dst *syncbuf.Buffer, src *os.File) (int64, error) {
	buf := make([]byte, 4096)
	var n int64
	for {
		k, err := src.Read(buf)
		if k > 0 {
			_, _ = dst.Write(buf[:k])
			n += int64(k)
		}
		if err != nil {
			return n, err
		}
	}
}

func (p *ptyConsole) send(t *testing.T, s string) {
	t.Helper()
	_, err := p.master.Write([]byte(s))
	require.NoError(t, err)
}

func (p *ptyConsole) expect(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("the console never showed %q; it showed:\n%s", s, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *ptyConsole) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("mhcodi guest console did not end after Ctrl-]; it showed:\n%s", p.out.String())
	}
}
