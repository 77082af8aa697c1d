package hypervisor

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/initiator/drive"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

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

func loadCluster(t *testing.T, edit func(*configs.Config)) *configs.Config {
	t.Helper()
	cfg, err := configs.Load("testdata/cluster.yaml")
	require.NoError(t, err)
	if edit != nil {
		edit(cfg)
	}
	return cfg
}

func xenCluster(c *configs.Config) {
	c.Hypervisor.Driver = configs.DriverXen
	c.Initiator.Backend = configs.InitiatorOpenISCSI
}

const hostInfo = `{"node":"node-a","epoch":3}`

func TestSpecFor(t *testing.T) {
	cfg := loadCluster(t, nil)
	s, err := SpecFor(cfg, "web1", "node-a", []byte(hostInfo))
	require.NoError(t, err)
	assert.Equal(t, "web1", s.Name)
	assert.Equal(t, 2, s.VCPUs)
	assert.EqualValues(t, 1024, s.MemoryMiB)
	assert.Equal(t, "/var/lib/mhcodi/image/vmlinuz", s.Kernel)
	assert.Equal(t, "/var/lib/mhcodi/image/initramfs.cpio", s.Initramfs)
	assert.Equal(t, "console=ttyS0 quiet", s.Cmdline)
	assert.Equal(t, "/run/mhcodi/guests/web1", s.RunDir)

	drives := s.Drives("vd")
	require.Len(t, drives, 4)
	want := []struct{ dev, disk, node, driver string }{
		{"vda", "root", "node-a", drive.DriverFile},
		{"vdb", "root", "node-b", drive.DriverNBD},
		{"vdc", "data", "node-b", drive.DriverNBD},
		{"vdd", "data", "node-a", drive.DriverFile},
	}
	for i, w := range want {
		d := drives[i]
		assert.Equal(t, w.dev, d.Dev)
		assert.Equal(t, w.disk, d.Leg.Disk, d.Dev)
		assert.Equal(t, w.node, d.Leg.Node, d.Dev)
		assert.Equal(t, w.driver, d.Driver, d.Dev)
		assert.Equal(t, d.Leg.Serial, d.Serial, d.Dev)
	}
	assert.Equal(t, 7, drives[1].TimeoutSec, "hypervisor.io_timeout")
	assert.Equal(t, "/run/mhcodi/guests/web1/legs/root-node-b.sock", drives[1].Socket, "the leg bridge's socket")

	// The guest's own boot section, and the other node's view.
	s, err = SpecFor(cfg, "db1", "node-b", nil)
	require.NoError(t, err)
	assert.Equal(t, "/boot/vmlinuz-db", s.Kernel)
	assert.Equal(t, "console=ttyS0 quiet mhcodi.role=db", s.Cmdline)
	assert.Equal(t, 1, s.VCPUs)
	assert.Equal(t, drive.DriverHostDevice, s.Disks[0].Legs[0].Driver)
	assert.Equal(t, drive.DriverNBD, s.Disks[0].Legs[1].Driver)
	assert.Nil(t, s.HostInfo)
}

// The ledger's stale nodes mark their legs, and the bridge is told, so a
// start does not wait for a leg on a host that is down.
func TestSpecForStale(t *testing.T) {
	cfg := loadCluster(t, nil)
	s, err := SpecFor(cfg, "web1", "node-a", nil, WithStale(map[string]bool{"node-b": true}))
	require.NoError(t, err)
	for _, d := range s.Drives("vd") {
		assert.Equal(t, d.Leg.Node == "node-b", d.Stale, d.Dev)
	}
	assert.Equal(t, []string{"node-b"}, staleNodes(nbdLegs(s)), "once, though two legs are on node-b")

	s, err = SpecFor(cfg, "web1", "node-a", nil)
	require.NoError(t, err)
	assert.Empty(t, staleNodes(nbdLegs(s)))
}

func TestSpecForErrors(t *testing.T) {
	cfg := loadCluster(t, nil)
	_, err := SpecFor(cfg, "nope", "node-a", nil)
	assert.ErrorContains(t, err, `guest "nope"`)
	_, err = SpecFor(cfg, "web1", "node-z", nil)
	assert.ErrorContains(t, err, `node "node-z"`)
	_, err = SpecFor(cfg, "web1", "node-a", nil, WithCHAP(&configs.CHAPSecrets{}))
	assert.ErrorContains(t, err, "node node-a has no initiator CHAP secret")
}

// TestSpecForCHAP renders QEMU's own iSCSI initiator (remote_legs:
// libiscsi), the only case where qemu holds CHAP secrets.
func TestSpecForCHAP(t *testing.T) {
	cfg := loadCluster(t, func(c *configs.Config) { c.Hypervisor.RemoteLegs = configs.RemoteLibiscsi })
	secrets := &configs.CHAPSecrets{Nodes: map[string]configs.NodeSecrets{"node-a": {Initiator: "node-a's secret"}}}
	s, err := SpecFor(cfg, "web1", "node-a", nil, WithCHAP(secrets), WithIOTimeout(2500e6))
	require.NoError(t, err)
	sec := s.Secrets()
	require.Len(t, sec, 2, "one secret per remote leg")
	for _, x := range sec {
		assert.Equal(t, "/run/mhcodi/guests/web1", filepath.Dir(x.File))
		assert.Equal(t, "node-a's secret", string(x.Data))
	}
	args := strings.Join(QEMUArgs(s, "tcg", nil, nil), " ")
	assert.NotContains(t, args, "node-a's secret")
	assert.Contains(t, args, "user=iqn.2026-11.org.example:prod.node-a.initiator")
	assert.Contains(t, args, "timeout=3,")
}

func TestSpecForXenUsesLinks(t *testing.T) {
	cfg := loadCluster(t, xenCluster)
	s, err := SpecFor(cfg, "web1", "node-a", nil)
	require.NoError(t, err)
	for _, d := range s.Drives("xvd") {
		assert.Equal(t, drive.DriverHostDevice, d.Driver)
		assert.Equal(t, "/dev/mhcodi/web1/"+d.Leg.Disk+"/"+d.Leg.Node, d.Filename)
	}
	assert.Equal(t, "console=hvc0 quiet", s.Cmdline)
}

func TestQEMUArgsGolden(t *testing.T) {
	cfg := loadCluster(t, nil)
	s, err := SpecFor(cfg, "web1", "node-a", []byte(hostInfo))
	require.NoError(t, err)
	args := QEMUArgs(s, "kvm", nil, []string{"-S"})
	golden(t, "qemu-web1-node-a", []byte(strings.Join(args, "\n")+"\n"))

	s, err = SpecFor(cfg, "db1", "node-b", nil)
	require.NoError(t, err)
	args = QEMUArgs(s, "tcg", []string{"-nic", "tap,ifname=tap-db1,script=no"}, nil)
	golden(t, "qemu-db1-node-b", []byte(strings.Join(args, "\n")+"\n"))
}

func TestGuestSpecJSON(t *testing.T) {
	cfg := loadCluster(t, nil)
	s, err := SpecFor(cfg, "db1", "node-a", nil)
	require.NoError(t, err)
	b, err := json.MarshalIndent(s, "", "  ")
	require.NoError(t, err)
	golden(t, "spec-db1-node-a", append(b, '\n'))
}

func TestChooseAccel(t *testing.T) {
	vmx := []byte("processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae vmx ssse3\n\n")
	svm := []byte("flags\t\t: fpu svm lm\n")
	none := []byte("flags\t\t: fpu vme hypervisor\n")
	assert.Equal(t, "kvm", ChooseAccel("auto", vmx, true))
	assert.Equal(t, "kvm", ChooseAccel("auto", svm, true))
	assert.Equal(t, "tcg", ChooseAccel("auto", vmx, false), "no usable /dev/kvm")
	assert.Equal(t, "tcg", ChooseAccel("auto", none, true), "no vmx/svm")
	assert.Equal(t, "tcg", ChooseAccel("tcg", vmx, true))
	assert.Equal(t, "kvm", ChooseAccel("kvm", none, false))
}

func TestDiskLetters(t *testing.T) {
	for i, want := range map[int]string{0: "a", 1: "b", 25: "z", 26: "aa", 27: "ab", 51: "az", 52: "ba", 701: "zz", 702: "aaa"} {
		assert.Equal(t, want, diskLetters(i), "%d", i)
	}
}

func TestCmdlineHasPIDFile(t *testing.T) {
	cl := []byte("/usr/bin/qemu-system-x86_64\x00-name\x00guest=web1\x00-pidfile\x00/run/g/web1/qemu.pid\x00")
	assert.True(t, cmdlineHasPIDFile(cl, "/run/g/web1/qemu.pid"))
	assert.False(t, cmdlineHasPIDFile(cl, "/run/g/web2/qemu.pid"))
	assert.False(t, cmdlineHasPIDFile([]byte("/bin/sleep\x00-pidfile\x00/run/g/web1/qemu.pid\x00"), "/run/g/web1/qemu.pid"), "not a qemu")
	assert.False(t, cmdlineHasPIDFile(nil, "/x"))
}

func TestCheckSocketPaths(t *testing.T) {
	assert.NoError(t, checkSocketPaths("/run/mhcodi/guests/web1"))
	assert.ErrorContains(t, checkSocketPaths("/"+strings.Repeat("x", 100)), "unix sockets allow 107")
}
