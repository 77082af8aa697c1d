package fenced

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mhcodi/mhcodi/internal/syncbuf"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/fencing/ops"
)

// testCA is a certificate authority made in the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) *testCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// leaf issues a server-and-client certificate for name, valid for ips.
func (ca *testCA) leaf(t *testing.T, name string, ips ...net.IP) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	sn, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: name}, IPAddresses: ips,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (ca *testCA) clientTLS(t *testing.T, name string) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{ca.leaf(t, name)}, RootCAs: ca.pool()}
}

// fakeOperator streams two lines, then fails.
type fakeOperator struct{}

func (fakeOperator) Run(_ context.Context, r api.OpRequest, progress func(api.Progress)) error {
	progress(api.Progress{Step: "ledger", Message: "claimed " + r.Guest})
	progress(api.Progress{Step: "fence node-b", Message: "fenced"})
	return errors.New("start node-a: refused")
}

func (fakeOperator) AutoFailover(context.Context, string) error { return nil }

// runningServer is a Server run with Run on loopback listeners.
type runningServer struct {
	s      *Server
	store  *fakeStore
	drv    *fakeDriver
	td     *fakeTargetd
	url    string
	socket string
	logs   *syncbuf.Buffer
	ca     *testCA
}

func startServer(t *testing.T) *runningServer {
	cfg := testConfig(t, false, "")
	ca := newTestCA(t, "test cluster CA")
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store := newFakeStore("node-a")
	drv := newFakeDriver()
	drv.noChannel = true
	td := &fakeTargetd{owner: cfg.InitiatorIQN("node-b")}
	s, err := New(Options{
		Config: cfg, Node: "node-a", Driver: drv, Targetd: td,
		Ledger:      LedgerStarterFunc(func(context.Context) (Member, ledger.Store, error) { return nil, store, nil }),
		NewOperator: func(ops.Env) Operator { return fakeOperator{} },
		StateDir:    t.TempDir(), Logger: log,
	})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sock := filepath.Join(t.TempDir(), "fenced.sock")
	uln, err := ListenUnix(sock)
	require.NoError(t, err)
	srvTLS := &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{ca.leaf(t, "node-a", net.IPv4(127, 0, 0, 1))},
		ClientCAs: ca.pool(), ClientAuth: tls.RequireAndVerifyClientCert,
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, RunOptions{TLS: ln, ServerTLS: srvTLS, Local: uln, Ready: func() { close(ready) }})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("not ready")
	}
	return &runningServer{s: s, store: store, drv: drv, td: td, url: "https://" + ln.Addr().String(), socket: sock, logs: logs, ca: ca}
}

func TestAPIAuth(t *testing.T) {
	r := startServer(t)
	ctx := context.Background()

	for _, who := range []string{"node-b", AdminName} {
		c := api.NewHTTPClient("node-a", r.url, r.ca.clientTLS(t, who))
		st, err := c.NodeStatus(ctx)
		require.NoError(t, err, who)
		assert.Equal(t, "node-a", st.Node)
		assert.Equal(t, "storage", st.Role)
		assert.True(t, st.Quorum)
		require.Len(t, st.Exports, 1)
		assert.Equal(t, "node-b", st.Exports[0].Owner, "the fence owner IQN is told as its node")
		assert.Positive(t, st.MemoryFreeMiB)
	}

	// A certificate of another CA, even with a node's name: the TLS
	// handshake fails, logged with the caller's address.
	foreign := newTestCA(t, "someone else's CA")
	cfg := foreign.clientTLS(t, "node-b")
	cfg.RootCAs = r.ca.pool()
	_, err := api.NewHTTPClient("node-a", r.url, cfg).NodeStatus(ctx)
	require.Error(t, err)
	assert.Zero(t, api.StatusOf(err), "refused in the handshake: %v", err)
	require.Eventually(t, func() bool { return strings.Contains(r.logs.String(), "TLS handshake error from 127.0.0.1") }, 5*time.Second, 10*time.Millisecond)

	// The cluster's CA, but not a node of the file: 403 and a log line.
	_, err = api.NewHTTPClient("node-a", r.url, r.ca.clientTLS(t, "node-z")).NodeStatus(ctx)
	assert.Equal(t, http.StatusForbidden, api.StatusOf(err), "%v", err)
	assert.Contains(t, r.logs.String(), "refused a request from outside the cluster")
	assert.Contains(t, r.logs.String(), "remote=127.0.0.1:")

	// Operations only on the local socket.
	err = api.NewHTTPClient("node-a", r.url, r.ca.clientTLS(t, AdminName)).Op(ctx, api.OpRequest{Op: api.OpStart, Guest: "web"}, nil)
	assert.Equal(t, http.StatusForbidden, api.StatusOf(err), "%v", err)
}

func TestAPIOpStreamsOnLocalSocket(t *testing.T) {
	r := startServer(t)
	c := api.NewUnixClient("node-a", r.socket)
	var lines []api.Progress
	err := c.Op(context.Background(), api.OpRequest{Op: api.OpStart, Guest: "web"}, func(p api.Progress) { lines = append(lines, p) })
	var oe *api.OpError
	require.ErrorAs(t, err, &oe)
	assert.Contains(t, oe.Message, "start node-a: refused")
	require.Len(t, lines, 3)
	assert.Equal(t, "claimed web", lines[0].Message)
	assert.True(t, lines[2].Done)
	assert.False(t, lines[0].Time.IsZero())

	st, err := c.NodeStatus(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "node-a", st.Node)
	ci, err := c.(api.ConfigClient).Config(context.Background())
	require.NoError(t, err)
	assert.Equal(t, ops.ConfigDigest(r.s.cfg), ci.Digest)
}

func TestStartChecksTheLedger(t *testing.T) {
	cfg := testConfig(t, false, "")
	s, store, drv, _ := newTestServer(t, cfg, "node-a")
	c := s.client("node-a") // the in-process loopback
	ctx := context.Background()

	err := c.Start(ctx, "web", api.StartRequest{Epoch: 3})
	assert.Equal(t, http.StatusConflict, api.StatusOf(err), "no record: %v", err)

	store.put(ledger.Record{Guest: "web", Owner: "node-b", Epoch: 3, Desired: ledger.DesiredRunning})
	err = c.Start(ctx, "web", api.StartRequest{Epoch: 3})
	assert.Equal(t, http.StatusConflict, api.StatusOf(err))
	assert.Contains(t, err.Error(), `the ledger gives it to "node-b" at epoch 3`)

	store.put(ledger.Record{Guest: "web", Owner: "node-a", Epoch: 4, Desired: ledger.DesiredRunning, Stale: map[string]uint64{"node-b": 4}})
	err = c.Start(ctx, "web", api.StartRequest{Epoch: 3})
	assert.Equal(t, http.StatusConflict, api.StatusOf(err))
	assert.Contains(t, err.Error(), "the ledger is at epoch 4, the request carries 3")
	assert.False(t, drv.isRunning("web"))

	store.setQuorum(ledger.ErrNoQuorum)
	err = c.Start(ctx, "web", api.StartRequest{Epoch: 4})
	assert.Equal(t, http.StatusServiceUnavailable, api.StatusOf(err), "%v", err)
	store.setQuorum(nil)

	require.NoError(t, c.Start(ctx, "web", api.StartRequest{Epoch: 4}))
	assert.True(t, drv.isRunning("web"))
	e, ok := s.started.get("web")
	assert.True(t, ok)
	assert.EqualValues(t, 4, e)
	spec := drv.specs["web"]
	assert.Contains(t, string(spec.HostInfo), `"node":"node-b","serial"`)
	assert.Contains(t, string(spec.HostInfo), `"local":false,"stale":true`, "node-b's leg is stale: %s", spec.HostInfo)

	err = c.Start(ctx, "web", api.StartRequest{Epoch: 4})
	assert.Equal(t, http.StatusConflict, api.StatusOf(err), "already running: %v", err)

	// The monitor leaves it running; once the ledger moves on, it goes.
	s.MonitorOnce(ctx)
	assert.True(t, drv.isRunning("web"))
	store.put(ledger.Record{Guest: "web", Owner: "node-b", Epoch: 5, Desired: ledger.DesiredRunning})
	s.MonitorOnce(ctx)
	assert.False(t, drv.isRunning("web"))
	assert.Equal(t, []string{"web"}, drv.destroyedList())
	in := s.Incidents()
	require.Len(t, in, 1)
	assert.Equal(t, "node-b", in[0].Owner)
	_, ok = s.started.get("web")
	assert.False(t, ok, "its epoch is forgotten")

	require.NoError(t, c.Destroy(ctx, "web"), "destroying a guest that does not run is done")
}

func TestFenceMapsStaleEpochTo409(t *testing.T) {
	cfg := testConfig(t, false, "")
	s, _, _, td := newTestServer(t, cfg, "node-b")
	c := s.client("node-b")
	ctx := context.Background()
	require.NoError(t, c.Fence(ctx, api.FenceRequest{Guest: "web", Owner: "node-a", Epoch: 5}))
	err := c.Fence(ctx, api.FenceRequest{Guest: "web", Owner: "node-b", Epoch: 4})
	assert.Equal(t, http.StatusConflict, api.StatusOf(err), "%v", err)
	assert.Contains(t, err.Error(), "stale fencing epoch")
	assert.Len(t, td.calls, 2)

	err = c.Fence(ctx, api.FenceRequest{Guest: "nope", Owner: "node-b", Epoch: 9})
	assert.Equal(t, http.StatusNotFound, api.StatusOf(err))
	err = c.Fence(ctx, api.FenceRequest{Guest: "web", Owner: "node-z", Epoch: 9})
	assert.Equal(t, http.StatusBadRequest, api.StatusOf(err))
	assert.Len(t, td.calls, 2, "refused before targetd")
}

func TestLedgerAnswerWithoutQuorum(t *testing.T) {
	cfg := testConfig(t, false, "")
	s, store, _, _ := newTestServer(t, cfg, "node-a")
	ctx := context.Background()
	store.put(ledger.Record{Guest: "web", Owner: "node-a", Epoch: 2, Desired: ledger.DesiredRunning})
	lr, err := s.client("node-a").Ledger(ctx)
	require.NoError(t, err)
	assert.True(t, lr.Quorum)
	assert.False(t, lr.Stale)
	require.Len(t, lr.Records, 1)

	store.setQuorum(ledger.ErrNoQuorum)
	lr, err = s.client("node-a").Ledger(ctx)
	require.NoError(t, err)
	assert.False(t, lr.Quorum)
	assert.True(t, lr.Stale)
	require.Len(t, lr.Records, 1, "the last records read")
	assert.EqualValues(t, 2, lr.Records[0].Epoch)
}

// TestStopWaitsForABusyGuest: a stop that finds the guest's guard taken
// (the monitor destroying it, or another stop) waits for it and succeeds
// once the guest is gone, instead of failing the operation with 409
// (issue 12: a planned failover aborted that way and left the guest
// down); a stop that cannot wait longer says so.
func TestStopWaitsForABusyGuest(t *testing.T) {
	cfg := testConfig(t, false, "")
	s, _, drv, _ := newTestServer(t, cfg, "node-a")
	c := s.client("node-a")
	drv.run("web")
	require.True(t, s.acquire("web"), "the monitor takes the guard")

	done := make(chan error, 1)
	go func() { done <- c.Stop(context.Background(), "web", api.StopRequest{Timeout: time.Second}) }()
	select {
	case err := <-done:
		t.Fatalf("the stop returned while another request held the guest: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	// The monitor's destroy ends and lets go.
	require.NoError(t, drv.Destroy(context.Background(), "web"))
	s.release("web", false)
	select {
	case err := <-done:
		require.NoError(t, err, "the guest is gone: the stop has what it asked for")
	case <-time.After(10 * time.Second):
		t.Fatal("the stop still waits after the guard was released")
	}
	assert.False(t, drv.isRunning("web"))

	// A stop whose caller gives up while the guard is held is refused,
	// and says why.
	drv.run("web")
	require.True(t, s.acquire("web"))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := c.Stop(ctx, "web", api.StopRequest{Timeout: time.Second})
	require.Error(t, err)
	assert.True(t, drv.isRunning("web"), "nothing was done")
	s.release("web", false)
	require.NoError(t, c.Stop(context.Background(), "web", api.StopRequest{Timeout: time.Second}))
	assert.False(t, drv.isRunning("web"))
}
