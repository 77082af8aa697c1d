package test

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mhcodi/mhcodi/guestraid/channel"
	"github.com/mhcodi/mhcodi/test/vm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// guestraidImage is a guest whose job is guestraid's vmjob with phases.
func guestraidImage(name string, phases ...string) vm.Image {
	return vm.Image{
		Name: name,
		Go: []vm.GoBinary{
			{Package: "./cmd/guestraid", Dst: "/bin/guestraid"},
			{Package: "./guestraid/internal/vmjob", Dst: "/bin/vmjob"},
		},
		Files:   []vm.HostFile{{Src: "/sbin/mdadm"}},
		Modules: append([]string{"md_mod", "raid1", "virtio_console", "qemu_fw_cfg"}, vm.VirtioBlk...),
		Job:     vm.Job{Argv: append([]string{"/bin/vmjob"}, phases...), Dir: "/tmp"},
	}
}

// hostEnd is the host side of the guest's virtio-serial port: qemu
// connects to it (chardev socket, client mode) and it collects the
// guest's messages.
type hostEnd struct {
	ln   net.Listener
	mu   sync.Mutex
	msgs []any
	done chan struct{}
}

func listenHost(t *testing.T, path string) *hostEnd {
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	h := &hostEnd{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			v, err := channel.Decode(sc.Bytes())
			if err != nil {
				t.Logf("host end: bad line %q: %v", sc.Text(), err)
				continue
			}
			h.mu.Lock()
			h.msgs = append(h.msgs, v)
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return h
}

func (h *hostEnd) events() []*channel.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*channel.Event
	for _, m := range h.msgs {
		if e, ok := m.(*channel.Event); ok {
			out = append(out, e)
		}
	}
	return out
}

func (h *hostEnd) states() []*channel.State {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*channel.State
	for _, m := range h.msgs {
		if s, ok := m.(*channel.State); ok {
			out = append(out, s)
		}
	}
	return out
}

var figureRE = regexp.MustCompile(`vmjob: figure .*`)

func logFigures(t *testing.T, console string) {
	for _, f := range figureRE.FindAllString(console, -1) {
		t.Log(strings.TrimSpace(f))
	}
}

// TestGuestRAIDInVM runs guestraid against real md in Debian's kernel,
// over four boots of the same two leg files:
//
//  1. both legs, host info by fw_cfg, events on the virtio-serial port:
//     create with flags, re-assemble, fail → remove → bitmap re-add,
//     stale → wipe → full resync, failover flips the flags, check scrub,
//     status;
//  2. only leg A: degraded assembly, A written alone;
//  3. only leg B: degraded assembly, B written alone (split brain);
//  4. both legs: without host info they are not assembled together; the
//     host's stale list then picks B, A is wiped and resynced in full;
//     then `guestraid boot` runs a command and shuts down on SIGTERM.
func TestGuestRAIDInVM(t *testing.T) {
	start := time.Now()
	legA := vm.DiskFile(t, "leg-a.img", 256<<20)
	legB := vm.DiskFile(t, "leg-b.img", 256<<20)
	dA := vm.Disk{Path: legA, Serial: "MHC-LEG-A"}
	dB := vm.Disk{Path: legB, Serial: "MHC-LEG-B"}

	dir, err := os.MkdirTemp("", "grvm")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	info, err := json.Marshal(channel.Host{Type: "host", Guest: "demo", Node: "node-a", Epoch: 1, Disks: []channel.Disk{{Name: "root", Legs: []channel.Leg{
		{Node: "node-a", Serial: "MHC-LEG-A", Local: true}, {Node: "node-b", Serial: "MHC-LEG-B"},
	}}}})
	require.NoError(t, err)
	infoFile := filepath.Join(dir, "host.json")
	require.NoError(t, os.WriteFile(infoFile, info, 0o600))
	sock := filepath.Join(dir, "ch.sock")
	host := listenHost(t, sock)

	res := vm.RunT(t, guestraidImage("guestraid-first", "first"), vm.Options{
		Disks: []vm.Disk{dA, dB}, Timeout: 6 * time.Minute,
		QEMUArgs: []string{
			"-fw_cfg", "name=" + channel.FwCfgName + ",file=" + infoFile,
			"-device", "virtio-serial-pci,id=vser0",
			"-chardev", "socket,id=grch,path=" + sock,
			"-device", "virtserialport,bus=vser0.0,chardev=grch,name=" + channel.PortName,
		},
	})
	logFigures(t, res.Console)
	require.Equal(t, 0, res.Status, "phase first failed; console in %s", res.LogFile)
	var words []string
	for _, e := range host.events() {
		words = append(words, e.Event)
	}
	assert.Contains(t, words, channel.EventCreated, "the created event reached the host over virtio-serial")
	if st := host.states(); assert.NotEmpty(t, st, "state messages over virtio-serial") {
		assert.Equal(t, "md0", st[0].MD)
		assert.Len(t, st[0].Legs, 2)
	}

	res = vm.RunT(t, guestraidImage("guestraid-only-a", "only-a"), vm.Options{Disks: []vm.Disk{dA}, Timeout: 3 * time.Minute})
	require.Equal(t, 0, res.Status, "phase only-a failed; console in %s", res.LogFile)
	assert.Contains(t, res.Console, "event=degraded")

	res = vm.RunT(t, guestraidImage("guestraid-only-b", "only-b"), vm.Options{Disks: []vm.Disk{dB}, Timeout: 3 * time.Minute})
	require.Equal(t, 0, res.Status, "phase only-b failed; console in %s", res.LogFile)

	res = vm.RunT(t, guestraidImage("guestraid-split", "split", "boot"), vm.Options{Disks: []vm.Disk{dA, dB}, Timeout: 5 * time.Minute})
	logFigures(t, res.Console)
	require.Equal(t, 0, res.Status, "phase split failed; console in %s", res.LogFile)
	assert.Contains(t, res.Console, "event=no-host-info")
	assert.Contains(t, res.Console, "event=split")
	assert.Contains(t, res.Console, "event=wipe")
	t.Logf("guestraid VM test: %s in all", time.Since(start).Round(time.Second))
}
