package channel

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const hostJSON = `{"type":"host","guest":"demo","node":"node-a","epoch":3,"disks":[{"name":"root","legs":[{"node":"node-a","serial":"MHC1","local":true,"stale":false},{"node":"node-b","serial":"MHC2","local":false,"stale":true}]}]}`

func TestDecodeHost(t *testing.T) {
	v, err := Decode([]byte(hostJSON))
	require.NoError(t, err)
	h, ok := v.(*Host)
	require.True(t, ok)
	assert.Equal(t, "demo", h.Guest)
	assert.Equal(t, uint64(3), h.Epoch)
	require.Len(t, h.Disks, 1)
	assert.Equal(t, Leg{Node: "node-b", Serial: "MHC2", Stale: true}, h.Disks[0].Legs[1])
	assert.Equal(t, 0, h.DiskIndex("root"))
	assert.Equal(t, -1, h.DiskIndex("data"))
}

func TestDecodeCheckAndUnknown(t *testing.T) {
	v, err := Decode([]byte(`{"type":"check","disk":"root"}`))
	require.NoError(t, err)
	assert.Equal(t, &Check{Type: "check", Disk: "root"}, v)

	_, err = Decode([]byte(`{"type":"reboot"}`))
	assert.ErrorIs(t, err, ErrUnknownType)
	_, err = Decode([]byte(`{"type":`))
	assert.Error(t, err)
}

func TestParseHostFileForm(t *testing.T) {
	// The fw_cfg file may leave out the type.
	h, err := ParseHost([]byte(`{"guest":"g","node":"n","epoch":1,"disks":[{"name":"root","legs":[{"serial":"A"}]}]}`))
	require.NoError(t, err)
	assert.Equal(t, TypeHost, h.Type)

	for name, bad := range map[string]string{
		"no guest":     `{"disks":[]}`,
		"wrong type":   `{"type":"check","guest":"g"}`,
		"no serial":    `{"guest":"g","disks":[{"name":"root","legs":[{"node":"a"}]}]}`,
		"three legs":   `{"guest":"g","disks":[{"name":"root","legs":[{"serial":"a"},{"serial":"b"},{"serial":"c"}]}]}`,
		"same serial":  `{"guest":"g","disks":[{"name":"root","legs":[{"serial":"a"},{"serial":"a"}]}]}`,
		"disk twice":   `{"guest":"g","disks":[{"name":"r","legs":[{"serial":"a"}]},{"name":"r","legs":[{"serial":"b"}]}]}`,
		"no disk name": `{"guest":"g","disks":[{"legs":[{"serial":"a"}]}]}`,
	} {
		_, err := ParseHost([]byte(bad))
		assert.Error(t, err, name)
	}
}

func TestEventJSONFieldNames(t *testing.T) {
	b, err := json.Marshal(Event{Type: TypeEvent, Time: "t", Disk: "root", Event: EventReAdd, Leg: "node-b", Detail: "d", DirtyBytes: 3 << 20, ArrayBytes: 256 << 20})
	require.NoError(t, err)
	assert.JSONEq(t, `{"type":"event","time":"t","disk":"root","event":"readd","leg":"node-b","detail":"d","dirty_bytes":3145728,"array_bytes":268435456}`, string(b))

	b, err = json.Marshal(State{Type: TypeState, Disk: "root", MD: "md0", ArrayState: "clean", Degraded: 1, SyncAction: "recover",
		SyncCompleted: "1024 / 524288", Legs: []LegState{{Node: "node-a", Serial: "S", Dev: "vda", State: "in_sync", Flags: []string{"failfast"}}}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"type":"state","time":"","disk":"root","md":"md0","array_state":"clean","degraded":1,"sync_action":"recover",
		"sync_completed":"1024 / 524288","progress":0,"mismatch_cnt":0,"array_bytes":0,
		"legs":[{"node":"node-a","serial":"S","dev":"vda","state":"in_sync","flags":["failfast"]}]}`, string(b))
}

func TestFindPort(t *testing.T) {
	sys := t.TempDir()
	for port, name := range map[string]string{"vport0p1": "org.qemu.guest_agent.0", "vport1p1": PortName} {
		dir := filepath.Join(sys, "class", "virtio-ports", port)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "name"), []byte(name+"\n"), 0o644))
	}
	p, err := FindPort(sys, "/dev", PortName)
	require.NoError(t, err)
	assert.Equal(t, "/dev/vport1p1", p)

	_, err = FindPort(sys, "/dev", "org.example.other")
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestConnRoundTrip(t *testing.T) {
	guestEnd, hostEnd := net.Pipe()
	c := NewConn(guestEnd, false, slog.New(slog.DiscardHandler))
	defer c.Close()

	// Host → guest: a bad line is skipped, the host and check messages come through.
	go func() {
		_, _ = io.WriteString(hostEnd, "not json\n"+hostJSON+"\n"+`{"type":"check","disk":"root"}`+"\n")
	}()
	got := []any{<-c.Incoming(), <-c.Incoming()}
	assert.IsType(t, &Host{}, got[0])
	assert.Equal(t, &Check{Type: TypeCheck, Disk: "root"}, got[1])

	// Guest → host: one JSON object per line.
	c.Send(Event{Type: TypeEvent, Disk: "root", Event: EventFail, Leg: "node-b"})
	_ = hostEnd.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(hostEnd).ReadBytes('\n')
	require.NoError(t, err)
	v, err := Decode(line)
	require.NoError(t, err)
	assert.Equal(t, EventFail, v.(*Event).Event)

	// The host going away ends Incoming.
	require.NoError(t, hostEnd.Close())
	_, open := <-c.Incoming()
	assert.False(t, open)
}

func TestNilConn(t *testing.T) {
	var c *Conn
	c.Send(Event{})
	c.Flush(time.Millisecond)
	assert.Nil(t, c.Incoming())
	assert.NoError(t, c.Close())
}
