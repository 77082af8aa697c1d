package certs

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
)

func testConfig(t *testing.T, nodes ...string) *configs.Config {
	t.Helper()
	dir := t.TempDir()
	y := "cluster:\n  name: test\n  iqn_prefix: iqn.2026-11.org.example\nnodes:\n"
	for i, n := range nodes {
		ip := "127.0.0." + string(rune('1'+i))
		y += "  - name: " + n + "\n    role: storage\n    mgmt_address: " + ip + "\n    san_address: 127.0.1." + string(rune('1'+i)) +
			"\n    storage:\n      backend: file\n      file:\n        dir: " + filepath.Join(dir, n) + "\n"
	}
	y += "storage:\n  backend: file\n  file:\n    dir: " + filepath.Join(dir, "legs") + "\n"
	p := filepath.Join(dir, "cluster.yaml")
	require.NoError(t, os.WriteFile(p, []byte(y), 0o644))
	cfg, err := configs.Load(p)
	require.NoError(t, err)
	return cfg
}

func TestGenerateFilesAndIdempotence(t *testing.T) {
	cfg := testConfig(t, "node-a", "node-b")
	dir := filepath.Join(t.TempDir(), "tls")
	acts, err := Generate(cfg, dir, Options{})
	require.NoError(t, err)
	require.Len(t, acts, 4)
	for _, a := range acts {
		assert.Equal(t, "created", a.What, a.Name)
	}
	for _, f := range []string{"ca.key", "node-a.key", "node-b.key", "admin.key"} {
		st, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
	}
	c, err := readCert(CertFile(dir, "node-b"))
	require.NoError(t, err)
	assert.Equal(t, "node-b", c.Subject.CommonName)
	assert.ElementsMatch(t, []string{"127.0.0.2", "127.0.1.2"}, ipStrings(c.IPAddresses))
	assert.ElementsMatch(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}, c.ExtKeyUsage)
	adm, err := readCert(CertFile(dir, Admin))
	require.NoError(t, err)
	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, adm.ExtKeyUsage)
	ca, err := readCert(filepath.Join(dir, CACert))
	require.NoError(t, err)
	assert.True(t, ca.IsCA)
	assert.Greater(t, time.Until(ca.NotAfter), 9*365*24*time.Hour)

	// Again: the CA and every certificate kept.
	before, _ := os.ReadFile(filepath.Join(dir, CACert))
	acts, err = Generate(cfg, dir, Options{})
	require.NoError(t, err)
	for _, a := range acts {
		assert.Equal(t, "kept", a.What, a.Name)
	}
	// A node added: only its certificate is new.
	cfg3 := testConfig(t, "node-a", "node-b", "node-c")
	acts, err = Generate(cfg3, dir, Options{})
	require.NoError(t, err)
	whats := map[string]string{}
	for _, a := range acts {
		whats[a.Name] = a.What
	}
	assert.Equal(t, map[string]string{"ca": "kept", "node-a": "kept", "node-b": "kept", "node-c": "created", "admin": "kept"}, whats)
	after, _ := os.ReadFile(filepath.Join(dir, CACert))
	assert.Equal(t, before, after)

	// Force: a new CA, everything reissued.
	acts, err = Generate(cfg, dir, Options{Force: true})
	require.NoError(t, err)
	assert.Equal(t, "replaced", acts[0].What)
	after, _ = os.ReadFile(filepath.Join(dir, CACert))
	assert.NotEqual(t, before, after)

	// A CA certificate without its key is not silently replaced.
	require.NoError(t, os.Remove(filepath.Join(dir, CAKey)))
	_, err = Generate(cfg, dir, Options{})
	require.ErrorIs(t, err, ErrCAExists)
}

func TestNodeNamedAdminRefused(t *testing.T) {
	cfg := testConfig(t, "admin")
	_, err := Generate(cfg, t.TempDir(), Options{})
	require.ErrorContains(t, err, "reserved")
}

func ipStrings(ips []net.IP) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

// A server with ServerTLS of node-a on loopback that answers with the
// caller's PeerName (or the refusal).
func peerServer(t *testing.T, cfg *configs.Config, dir string) *httptest.Server {
	t.Helper()
	stls, err := ServerTLS(dir, "node-a")
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, err := CheckPeer(cfg, r.TLS)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, name)
	}))
	srv.Listener.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv.Listener = l
	srv.TLS = stls
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func call(t *testing.T, url string, ctls *tls.Config) (string, error) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: ctls}, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", &httpError{resp.StatusCode, string(b)}
	}
	return string(b), nil
}

type httpError struct {
	code int
	body string
}

func (e *httpError) Error() string { return e.body }

func TestPeerNames(t *testing.T) {
	cfg := testConfig(t, "node-a", "node-b")
	dir := t.TempDir()
	require.NoError(t, Init(cfg, dir))
	srv := peerServer(t, cfg, dir)

	for _, who := range []string{"node-b", "node-a", Admin} {
		ctls, err := ClientTLS(dir, who)
		require.NoError(t, err)
		name, err := call(t, srv.URL, ctls)
		require.NoError(t, err, who)
		assert.Equal(t, who, name)
	}

	// A certificate of another CA, even with a cluster node's name: the
	// handshake fails.
	other := t.TempDir()
	require.NoError(t, Init(cfg, other))
	otls, err := ClientTLS(other, "node-b")
	require.NoError(t, err)
	otls.RootCAs, err = Pool(dir) // it trusts our server, we do not trust it
	require.NoError(t, err)
	_, err = call(t, srv.URL, otls)
	require.Error(t, err)

	// No client certificate at all.
	pool, err := Pool(dir)
	require.NoError(t, err)
	_, err = call(t, srv.URL, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13})
	require.Error(t, err)

	// A node the CA signed but the cluster file no longer has.
	cfg3 := testConfig(t, "node-a", "node-b", "node-c")
	require.NoError(t, Init(cfg3, dir))
	ctls, err := ClientTLS(dir, "node-c")
	require.NoError(t, err)
	_, err = call(t, srv.URL, ctls)
	var he *httpError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, http.StatusForbidden, he.code)
	assert.Contains(t, he.body, `"node-c" is not a node of cluster test`)

	// An expired certificate of the right CA.
	ca, err := loadCA(dir)
	require.NoError(t, err)
	exp := t.TempDir()
	require.NoError(t, ca.issueValid(exp, "node-b", nil, true, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)))
	cert, err := tls.LoadX509KeyPair(CertFile(exp, "node-b"), KeyFile(exp, "node-b"))
	require.NoError(t, err)
	_, err = call(t, srv.URL, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	require.Error(t, err)

	// PeerName of a connection without a verified chain.
	_, err = PeerName(&tls.ConnectionState{})
	require.ErrorIs(t, err, ErrNotPeer)
	_, err = PeerName(nil)
	require.ErrorIs(t, err, ErrNotPeer)
}
