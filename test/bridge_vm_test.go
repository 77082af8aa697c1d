package test

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/test/vm"
)

// consoleLine is one "workload: " line of the guest console, with the
// host time it arrived.
type consoleLine struct {
	at   time.Time
	text string
}

// consoleWatch records the workload's console lines as they arrive.
type consoleWatch struct {
	mu      sync.Mutex
	partial bytes.Buffer
	lines   []consoleLine
	started chan struct{}
	once    sync.Once
}

func (c *consoleWatch) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.partial.Write(p)
	for {
		b := c.partial.Bytes()
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(b[:i]), "\r")
		c.partial.Next(i + 1)
		if j := strings.Index(line, "workload: "); j >= 0 {
			line = line[j:]
			c.lines = append(c.lines, consoleLine{at: now, text: line})
			if strings.HasPrefix(line, "workload: start") {
				c.once.Do(func() { close(c.started) })
			}
		}
	}
	return len(p), nil
}

func (c *consoleWatch) snapshot() []consoleLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]consoleLine(nil), c.lines...)
}

// TestBridgeVM is the decisive end-to-end test: a guest writes to its
// remote leg through QEMU's NBD client and mhcodi-bridge, targetd dies in
// the middle and comes back. The guest must get EIO within about the I/O
// timeout (not freeze, as with QEMU's libiscsi), keep running, and write
// successfully again once targetd is back.
func TestBridgeVM(t *testing.T) {
	td := startTargetd(t, nil)
	rb := startBridge(t, bridgeConfig(t, td, nil))
	rb.waitState(t, "up", 10*time.Second)

	const (
		killAfter    = 10 * time.Second
		restartAfter = 20 * time.Second
		runFor       = 45 * time.Second
	)
	con := &consoleWatch{started: make(chan struct{})}
	var killAt, restartAt time.Time
	ctl := make(chan struct{})
	go func() {
		defer close(ctl)
		select {
		case <-con.started:
		case <-time.After(3 * time.Minute):
			return
		}
		time.Sleep(killAfter)
		td.kill(t)
		killAt = time.Now()
		time.Sleep(restartAfter)
		td.restart(t)
		restartAt = time.Now()
	}()

	img := vm.Image{
		Name:    "bridge-nbd",
		Go:      []vm.GoBinary{{Package: "./cmd/mhcodi-workload"}},
		Modules: vm.VirtioBlk,
		Job: vm.Job{Argv: []string{"/bin/mhcodi-workload", "write", "-dev", "/dev/vda", "-size", "4M",
			"-report", "1s", "-for", runFor.String()}},
	}
	res, err := vm.Run(t.Context(), img, vm.Options{
		QEMUArgs: []string{
			"-blockdev", "driver=nbd,node-name=remote,server.type=unix,server.path=" + rb.socket + ",reconnect-delay=2",
			"-device", "virtio-blk-pci,drive=remote,serial=remote",
		},
		Timeout: 4 * time.Minute,
		Console: con,
		Logf:    t.Logf,
	})
	<-ctl
	if errors.Is(err, vm.ErrTimeout) && res != nil {
		t.Errorf("the VM did not finish: %v", err)
	} else {
		require.NoError(t, err)
	}
	require.False(t, killAt.IsZero(), "the workload never started; console in %s", res.LogFile)
	require.False(t, restartAt.IsZero())
	defer func() {
		if t.Failed() {
			t.Logf("bridge log:\n%s\nguest console (tail):\n%s", rb.logText(), res.Console[max(0, len(res.Console)-6000):])
		}
	}()

	lines := con.snapshot()
	var firstErr, firstProgressAfter time.Time
	var errsDuringOutage int
	var maxGap time.Duration
	var prev time.Time
	for _, l := range lines {
		if !prev.IsZero() && l.at.After(killAt) && l.at.Before(restartAt) {
			maxGap = max(maxGap, l.at.Sub(prev))
		}
		prev = l.at
		switch {
		case strings.HasPrefix(l.text, "workload: ioerror") && l.at.After(killAt):
			if firstErr.IsZero() {
				firstErr = l.at
			}
			if l.at.Before(restartAt) {
				errsDuringOutage++
			}
		case strings.HasPrefix(l.text, "workload: progress") && l.at.After(restartAt) && firstProgressAfter.IsZero():
			firstProgressAfter = l.at
		}
	}
	require.False(t, firstErr.IsZero(), "the guest never saw an I/O error after targetd died")
	eio := firstErr.Sub(killAt)
	t.Logf("guest got EIO %v after targetd was killed (io-timeout %v)", eio.Round(time.Millisecond), bridgeIOTimeout)
	assert.Less(t, eio, bridgeIOTimeout+3*time.Second, "EIO must reach the guest within about the I/O timeout")
	t.Logf("%d I/O errors during the %v outage; longest silence on the console %v", errsDuringOutage, restartAt.Sub(killAt).Round(time.Second), maxGap.Round(time.Millisecond))
	assert.GreaterOrEqual(t, errsDuringOutage, 3, "the guest keeps running and failing writes while targetd is down")
	assert.Less(t, maxGap, bridgeIOTimeout+3*time.Second, "the guest never freezes")
	require.False(t, firstProgressAfter.IsZero(), "no successful write after targetd came back")
	t.Logf("writes succeed again %v after targetd restarted", firstProgressAfter.Sub(restartAt).Round(time.Millisecond))
	assert.Less(t, firstProgressAfter.Sub(restartAt), 10*time.Second)
	assert.Contains(t, res.Console, "workload: stopped")
}
