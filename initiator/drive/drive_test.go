package drive

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func loadCluster(t *testing.T, edit func(*configs.Config)) *configs.Config {
	t.Helper()
	cfg, err := configs.Load("testdata/cluster.yaml")
	require.NoError(t, err)
	// Most cases render QEMU's own iSCSI driver; remote-bridge switches
	// back to the default.
	cfg.Hypervisor.RemoteLegs = configs.RemoteLibiscsi
	if edit != nil {
		edit(cfg)
	}
	return cfg
}

func leg(t *testing.T, cfg *configs.Config, guest, disk, node string) configs.LegInfo {
	t.Helper()
	for _, l := range cfg.Legs() {
		if l.Guest == guest && l.Disk == disk && l.Node == node {
			return l
		}
	}
	t.Fatalf("no leg %s/%s/%s", guest, disk, node)
	return configs.LegInfo{}
}

// golden compares got with testdata/<name>.golden, or rewrites it with
// -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		require.NoError(t, os.WriteFile(p, got, 0o644))
		return
	}
	want, err := os.ReadFile(p)
	require.NoError(t, err, "run go test -update to create it")
	assert.Equal(t, string(want), string(got), "%s differs; if the change is intended, run go test -update", p)
}

// render is everything a Spec renders to, in one text for a golden file.
func render(t *testing.T, s Spec, dev string) []byte {
	t.Helper()
	js, err := json.MarshalIndent(s.BlockdevJSON(), "", "  ")
	require.NoError(t, err)
	var b strings.Builder
	b.WriteString("# command line\n" + s.CommandLine() + "\n-device " + s.DeviceArg(dev) + "\n")
	b.WriteString("# QMP blockdev-add\n" + string(js) + "\n")
	if obj := s.SecretObjectJSON(); obj != nil {
		oj, err := json.MarshalIndent(obj, "", "  ")
		require.NoError(t, err)
		b.WriteString("# QMP object-add\n" + string(oj) + "\n")
	}
	x, err := s.LibvirtXML(dev)
	require.NoError(t, err)
	b.WriteString("# libvirt\n" + string(x))
	return []byte(b.String())
}

func TestGolden(t *testing.T) {
	chap := &Credentials{User: "iqn.2026-11.org.example:prod.node-b.initiator", Secret: "node-b initiator secret"}
	openISCSI := func(c *configs.Config) { c.Initiator.Backend = configs.InitiatorOpenISCSI }
	bridge := func(c *configs.Config) { c.Hypervisor.RemoteLegs = configs.RemoteBridge }
	cases := []struct {
		name, guest      string
		edit             func(*configs.Config)
		disk, node, host string
		o                Options
	}{
		{name: "local-file", disk: "root", node: "node-a", host: "node-a"},
		{name: "local-lvm", disk: "root", node: "node-b", host: "node-b"},
		{name: "remote-iscsi", disk: "root", node: "node-b", host: "node-a", o: Options{Timeout: 5 * time.Second}},
		{name: "remote-iscsi-chap", disk: "root", node: "node-a", host: "node-b",
			o: Options{CHAP: chap, SecretDir: "/run/mhcodi/guests/web1", Timeout: 1500 * time.Millisecond}},
		{name: "remote-kernel", edit: openISCSI, guest: "db1", disk: "data", node: "node-c", host: "node-b"},
		{name: "links-local", disk: "root", node: "node-a", host: "node-a", o: Options{Links: true}},
		{name: "remote-bridge", edit: bridge, disk: "root", node: "node-b", host: "node-a",
			o: Options{BridgeDir: "/run/mhcodi/guests/web1/legs", Timeout: 5 * time.Second, CHAP: chap, SecretDir: "/x"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := loadCluster(t, c.edit)
			c.o.Host = c.host
			if c.guest == "" {
				c.guest = "web1"
			}
			s, err := For(cfg, leg(t, cfg, c.guest, c.disk, c.node), c.o)
			require.NoError(t, err)
			golden(t, c.name, render(t, s, "vdb"))
		})
	}
}

func TestForChoosesDriver(t *testing.T) {
	cfg := loadCluster(t, nil)
	l := leg(t, cfg, "web1", "root", "node-b")

	s, err := For(cfg, l, Options{Host: "node-b"})
	require.NoError(t, err)
	assert.False(t, s.Remote)
	assert.Equal(t, DriverHostDevice, s.Driver)
	assert.Equal(t, "/dev/vg0/mhc-web1-root", s.Filename)
	assert.Equal(t, "native", s.AIO)

	s, err = For(cfg, l, Options{Host: "node-a"})
	require.NoError(t, err)
	assert.True(t, s.Remote)
	assert.Equal(t, DriverISCSI, s.Driver)
	assert.Equal(t, "192.0.2.12:3261", s.Portal.String())
	assert.Equal(t, l.TargetIQN, s.Target)
	assert.Equal(t, "iqn.2026-11.org.example:prod.node-a.initiator", s.Initiator)
	assert.Equal(t, l.Serial, s.Serial)
	assert.Zero(t, s.TimeoutSec, "no timeout given: QEMU's default")

	cfg.Initiator.Backend = configs.InitiatorNetlink
	cfg.Initiator.LinkDir = "/run/links"
	s, err = For(cfg, l, Options{Host: "node-a"})
	require.NoError(t, err)
	assert.Equal(t, DriverHostDevice, s.Driver)
	assert.Equal(t, "/run/links/web1/root/node-b", s.Filename)

	// Without O_DIRECT, native AIO is impossible.
	la := leg(t, cfg, "web1", "root", "node-a")
	s, err = For(cfg, la, Options{Host: "node-a", NoDirect: true})
	require.NoError(t, err)
	assert.False(t, s.CacheDirect)
	assert.Contains(t, s.Blockdev(), "cache.direct=off,aio=threads")
}

func TestForErrors(t *testing.T) {
	cfg := loadCluster(t, nil)
	l := leg(t, cfg, "web1", "root", "node-b")
	_, err := For(cfg, l, Options{})
	assert.ErrorContains(t, err, "no host")
	_, err = For(cfg, l, Options{Host: "node-z"})
	assert.ErrorContains(t, err, `host "node-z" is not a node`)
	_, err = For(cfg, l, Options{Host: "node-a", CHAP: &Credentials{User: "u", Secret: "s"}})
	assert.ErrorContains(t, err, "CHAP needs a directory")
	_, err = For(cfg, l, Options{Host: "node-a", CHAP: &Credentials{User: "u"}, SecretDir: "/x"})
	assert.ErrorContains(t, err, "without user or secret")
}

// TestSecretStaysOffTheCommandLine: the CHAP secret is in the file the
// caller writes, never in an argument or a JSON rendering.
func TestSecretStaysOffTheCommandLine(t *testing.T) {
	cfg := loadCluster(t, nil)
	const secret = "a very secret secret"
	s, err := For(cfg, leg(t, cfg, "db1", "data", "node-c"), Options{
		Host: "node-a", CHAP: &Credentials{User: cfg.InitiatorIQN("node-a"), Secret: secret}, SecretDir: "/run/x",
	})
	require.NoError(t, err)
	require.NotNil(t, s.Secret)
	assert.Equal(t, []byte(secret), s.Secret.Data)
	assert.Equal(t, "/run/x/sec-"+s.NodeName, s.Secret.File)
	js, err := json.Marshal(s)
	require.NoError(t, err)
	oj, err := json.Marshal(s.SecretObjectJSON())
	require.NoError(t, err)
	x, err := s.LibvirtXML("vda")
	require.NoError(t, err)
	for _, text := range []string{strings.Join(s.Args(), " "), s.CommandLine(), string(js), string(oj), string(x)} {
		assert.NotContains(t, text, secret)
	}
}

// TestCHAPFromSecretsFile goes the way a caller does: the cluster's
// secrets file, InitiatorCredentials, For.
func TestCHAPFromSecretsFile(t *testing.T) {
	cfg := loadCluster(t, nil)
	p := filepath.Join(t.TempDir(), "chap.yaml")
	require.NoError(t, os.WriteFile(p, []byte(`nodes:
  node-a: {initiator: "node-a initiator secret"}
  node-b: {initiator: "node-b initiator secret"}
  node-c: {initiator: "node-c initiator secret"}
`), 0o600))
	cfg.Security.CHAPSecrets = p
	secrets, err := cfg.LoadCHAPSecrets()
	require.NoError(t, err)
	user, secret, ok := secrets.InitiatorCredentials(cfg, "node-a")
	require.True(t, ok)
	s, err := For(cfg, leg(t, cfg, "web1", "root", "node-b"), Options{Host: "node-a", CHAP: &Credentials{user, secret}, SecretDir: "/run/x"})
	require.NoError(t, err)
	assert.Contains(t, s.Blockdev(), ",user=iqn.2026-11.org.example:prod.node-a.initiator,password-secret=sec-"+s.NodeName+",")
	assert.Equal(t, "node-a initiator secret", string(s.Secret.Data))
}

func TestEscape(t *testing.T) {
	assert.Equal(t, "a,,b,,,,c", escape("a,b,,c"))
	assert.Equal(t, `'it'\''s'`, shellQuote("it's"))
	assert.Equal(t, "driver=file", shellQuote("driver=file"))
}

// TestBridgeLeg checks the default way to a remote leg: NBD to the leg
// bridge's socket, export named by the target IQN, no secret for QEMU
// (the bridge does CHAP), and a clear error without a bridge directory.
func TestBridgeLeg(t *testing.T) {
	cfg := loadCluster(t, func(c *configs.Config) { c.Hypervisor.RemoteLegs = configs.RemoteBridge })
	l := leg(t, cfg, "web1", "root", "node-b")
	s, err := For(cfg, l, Options{Host: "node-a", BridgeDir: "/run/b", Timeout: 3 * time.Second,
		CHAP: &Credentials{User: "u", Secret: "s3cret-s3cret"}, SecretDir: "/run/s"})
	require.NoError(t, err)
	assert.Equal(t, DriverNBD, s.Driver)
	assert.Equal(t, "/run/b/root-node-b.sock", s.Socket)
	assert.Nil(t, s.Secret, "the bridge logs in; QEMU holds no CHAP secret")
	assert.Equal(t, "driver=nbd,node-name="+l.Serial+",server.type=unix,server.path=/run/b/root-node-b.sock,export="+l.TargetIQN+",reconnect-delay=3,discard=unmap", s.Blockdev())

	_, err = For(cfg, l, Options{Host: "node-a"})
	assert.ErrorContains(t, err, "no bridge directory")
}
