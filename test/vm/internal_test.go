package vm

import (
	"strings"
	"testing"

	"github.com/mhcodi/mhcodi/test/vm/internal/guest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestQEMUArgs(t *testing.T) {
	k := Kernel{Dir: "/k", Version: "6.1.0-1-amd64"}
	args, err := qemuArgs(k, "/i.cpio", "abc", Options{Disks: []Disk{{Path: "/d/a,b.img", Serial: "s1", ReadOnly: true}}})
	require.NoError(t, err)
	line := strings.Join(args, " ")
	assert.Contains(t, line, "-accel tcg")
	assert.Contains(t, line, "-nic none")
	assert.Contains(t, line, "-no-reboot")
	assert.Contains(t, line, "console=ttyS0 panic=-1 mhcodi.vm.nonce=abc")
	assert.Contains(t, line, "-drive if=none,id=disk0,file=/d/a,,b.img,format=raw,cache=unsafe,readonly=on -device virtio-blk-pci,drive=disk0,serial=s1")

	args, err = qemuArgs(k, "/i.cpio", "abc", Options{Network: []string{"-nic", "user,model=virtio-net-pci"}})
	require.NoError(t, err)
	assert.NotContains(t, strings.Join(args, " "), "-nic none")

	_, err = qemuArgs(k, "/i.cpio", "abc", Options{QEMUArgs: []string{"-enable-kvm"}})
	assert.ErrorContains(t, err, "TCG only")
	_, err = qemuArgs(k, "/i.cpio", "abc", Options{Disks: []Disk{{Path: "/x", Serial: "a-serial-longer-than-20"}}})
	assert.Error(t, err)
}

func TestConsoleMarkers(t *testing.T) {
	c := &console{nonce: "00ff", file: &strings.Builder{}, exit: make(chan struct{})}
	for _, chunk := range []string{
		"boot\r\nMHCODI-VM-START 00ff\r\n", "MHCODI-VM-EXIT 1234 3\r\n", // another run's nonce
		"job output\r\n[ 1.0] kernel: MHCODI-VM-", "EXIT 00ff 7 [ 1.1] more\r\n",
	} {
		_, _ = c.Write([]byte(chunk))
	}
	assert.False(t, c.startAt.IsZero())
	require.True(t, c.exited)
	st, err := guest.ParseStatus(c.status)
	require.NoError(t, err)
	assert.Equal(t, 7, st)
	select {
	case <-c.exit:
	default:
		t.Fatal("exit channel not closed")
	}
}

func TestBuildIsCached(t *testing.T) {
	img := Image{
		Name:    "vm-cache-test",
		Go:      []GoBinary{{Package: "github.com/mhcodi/mhcodi/test/vm/internal/vmcheck"}},
		Files:   []HostFile{{Src: "/bin/true"}},
		Static:  []StaticFile{{Path: "/etc/x.conf", Data: []byte("x")}},
		Modules: []string{"loop"},
		Job:     Job{Argv: []string{"/bin/vmcheck"}},
	}
	first, err := Build(t.Context(), img, Options{})
	require.NoError(t, err)
	second, err := Build(t.Context(), img, Options{})
	require.NoError(t, err)
	assert.True(t, second.Cached)
	assert.Equal(t, first.Path, second.Path)
	img.Static[0].Data = []byte("y")
	third, err := Build(t.Context(), img, Options{})
	require.NoError(t, err)
	assert.NotEqual(t, first.Key, third.Key, "a changed file changes the key")

	_, err = Build(t.Context(), Image{Name: "Bad Name", Job: img.Job}, Options{})
	assert.Error(t, err)
}
