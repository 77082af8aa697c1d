package iscsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/iscsi/pdu"
	"github.com/mhcodi/mhcodi/iscsi/text"
	"github.com/mhcodi/mhcodi/targetd/login"
	"github.com/mhcodi/mhcodi/targetd/scsi"
)

const (
	testTarget    = "iqn.2026-11.org.mhcodi:test.node-a.g.d"
	testInitiator = "iqn.2026-11.org.mhcodi:test.node-b.initiator"
)

// memDev is an in-memory BlockDev for transport tests.
type memDev struct {
	mu sync.RWMutex
	b  []byte
}

func (m *memDev) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return copy(p, m.b[off:]), nil
}
func (m *memDev) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(m.b[off:], p), nil
}
func (m *memDev) bytes(off, n int) []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.b[off:off+n]...)
}
func (m *memDev) Size() int64              { return int64(len(m.b)) }
func (m *memDev) Sync() error              { return nil }
func (m *memDev) Discard(_, _ int64) error { return nil }
func (m *memDev) DiscardZeroes() bool      { return false }

type fixture struct {
	srv  *Server
	addr string
	dev  *memDev
}

func newFixture(t *testing.T, mod func(*Config)) *fixture {
	t.Helper()
	dev := &memDev{b: make([]byte, 4<<20)}
	lu, err := scsi.NewLU(scsi.LUConfig{Dev: dev, Serial: "MHC0123456789ABCDEF0"})
	require.NoError(t, err)
	st := scsi.NewTarget(scsi.TargetOptions{})
	require.NoError(t, st.AddLU(0, lu))
	cfg := Config{
		Lookup: func(name string) (SCSITarget, bool) {
			if name == testTarget {
				return Adapt(st), true
			}
			return nil, false
		},
		Discover: func(string) []login.TargetInfo {
			return []login.TargetInfo{{Name: testTarget, Portals: []login.Portal{{Address: "127.0.0.1:3260", Tag: 1}}}}
		},
		Authorize: func(initiator, target string, discovery bool) (login.Decision, error) {
			if initiator != testInitiator {
				return login.Decision{}, nil
			}
			if !discovery && target != testTarget {
				return login.Decision{NotFound: true}, nil
			}
			return login.Decision{Allowed: true}, nil
		},
		Limits:   login.Limits{MaxRecvDataSegmentLength: 8192, MaxBurstLength: 16384, FirstBurstLength: 8192},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		IdleKick: -1, // tests read PDUs at their own pace
	}
	if mod != nil {
		mod(&cfg)
	}
	srv := NewServer(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &fixture{srv: srv, addr: ln.Addr().String(), dev: dev}
}

// client is a minimal initiator speaking raw PDUs.
type client struct {
	t      *testing.T
	nc     net.Conn
	r      *pdu.Reader
	w      *pdu.Writer
	cmdSN  uint32
	statSN uint32
	itt    uint32
	isid   [6]byte
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	c := &client{t: t, nc: nc, r: pdu.NewReader(nc, 64<<10), w: pdu.NewWriter(nc), cmdSN: 1, isid: [6]byte{0x80, 0, 0, 0, 0, 1}}
	c.r.MaxDataLen = 1 << 20
	return c
}

func (c *client) send(h *pdu.Header, data []byte) {
	c.t.Helper()
	require.NoError(c.t, c.w.WritePDU(h, data))
}

func (c *client) recv() (*pdu.Header, []byte) {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h pdu.Header
	require.NoError(c.t, c.r.ReadHeader(&h))
	data := make([]byte, h.DataLen())
	require.NoError(c.t, c.r.ReadData(data))
	if h.Opcode() != pdu.OpR2T && h.Opcode() != pdu.OpDataIn || h[1]&0x01 != 0 {
		c.statSN = h.U32(pdu.OffCmdSN) + 1
	}
	return &h, data
}

// expectClosed checks the target closes the connection.
func (c *client) expectClosed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for {
		_, err := c.nc.Read(buf)
		if err != nil {
			var ne net.Error
			require.False(c.t, errorsAs(err, &ne) && ne.Timeout(), "target did not close the connection")
			return
		}
	}
}

func errorsAs(err error, ne *net.Error) bool {
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}

func (c *client) login(target string, extra ...string) (*pdu.Header, []byte) {
	c.t.Helper()
	kv := []text.KV{{Key: "InitiatorName", Value: testInitiator}, {Key: "SessionType", Value: "Normal"}}
	if target == "" {
		kv[1].Value = "Discovery"
	} else {
		kv = append(kv, text.KV{Key: "TargetName", Value: target})
	}
	kv = append(kv, text.KV{Key: "AuthMethod", Value: "None"})
	for i := 0; i+1 < len(extra); i += 2 {
		kv = append(kv, text.KV{Key: extra[i], Value: extra[i+1]})
	}
	var h pdu.Header
	h.SetOpcode(pdu.OpLoginReq)
	h[0] |= 0x40
	h[1] = 0x80 | 0<<2 | 3 // T, CSG security, NSG full feature
	h.SetISIDTSIH(c.isid, 0)
	h.SetITT(c.nextITT())
	h.PutU32(pdu.OffCmdSN, c.cmdSN)
	c.send(&h, text.EncodeText(kv))
	return c.recv()
}

func (c *client) nextITT() uint32 { c.itt++; return c.itt }

func loggedIn(t *testing.T, f *fixture, extra ...string) *client {
	t.Helper()
	c := dial(t, f.addr)
	h, data := c.login(testTarget, extra...)
	require.Equal(t, pdu.OpLoginResp, h.Opcode())
	require.Equal(t, byte(0), h[36], "login status class; data %q", data)
	require.NotZero(t, h.TSIH())
	return c
}

// scsiCmd sends a SCSI Command and returns its ITT.
func (c *client) scsiCmd(cdb []byte, read, write bool, edtl uint32, imm []byte, final bool) uint32 {
	var h pdu.Header
	h.SetOpcode(pdu.OpSCSICmd)
	h[1] = 1 // simple
	if final {
		h[1] |= 0x80
	}
	if read {
		h[1] |= 0x40
	}
	if write {
		h[1] |= 0x20
	}
	itt := c.nextITT()
	h.SetITT(itt)
	h.PutU32(pdu.OffTTT, edtl)
	h.PutU32(pdu.OffCmdSN, c.cmdSN)
	c.cmdSN++
	h.PutU32(pdu.OffExpSN, c.statSN)
	copy(h.CDB(), cdb)
	c.send(&h, imm)
	return itt
}

func write10(lba uint32, blocks uint16) []byte {
	cdb := make([]byte, 10)
	cdb[0] = 0x2a
	binary.BigEndian.PutUint32(cdb[2:], lba)
	binary.BigEndian.PutUint16(cdb[7:], blocks)
	return cdb
}

func read10(lba uint32, blocks uint16) []byte {
	cdb := write10(lba, blocks)
	cdb[0] = 0x28
	return cdb
}

func (c *client) nop() (*pdu.Header, []byte) {
	var h pdu.Header
	h.SetOpcode(pdu.OpNOPOut)
	h[1] = 0x80
	h.SetITT(c.nextITT())
	h.PutU32(pdu.OffTTT, pdu.Reserved)
	h.PutU32(pdu.OffCmdSN, c.cmdSN)
	c.cmdSN++
	c.send(&h, []byte("ping"))
	return c.recv()
}

// abortTask sends an immediate ABORT TASK for itt with refCmdSN as its
// RefCmdSN and returns the Task Management Function Response.
func (c *client) abortTask(itt, refCmdSN uint32) *pdu.Header {
	var h pdu.Header
	h.SetOpcode(pdu.OpTaskMgmtReq)
	h[0] |= 0x40 // immediate
	h[1] = 0x80 | tmfAbortTask
	h.SetITT(c.nextITT())
	h.PutU32(pdu.OffTTT, itt)
	h.PutU32(pdu.OffCmdSN, c.cmdSN)
	h.PutU32(pdu.OffMaxCmdSN, refCmdSN) // RefCmdSN
	c.send(&h, nil)
	resp, _ := c.recv()
	return resp
}

func TestLoginAndNOP(t *testing.T) {
	f := newFixture(t, nil)
	c := loggedIn(t, f)
	h, data := c.nop()
	assert.Equal(t, pdu.OpNOPIn, h.Opcode())
	assert.Equal(t, []byte("ping"), data)
	assert.Equal(t, c.cmdSN, h.U32(pdu.OffExpSN), "ExpCmdSN follows the NOP-Out")
	assert.Len(t, f.srv.Sessions(), 1)
}

func TestLoginRefused(t *testing.T) {
	f := newFixture(t, nil)
	c := dial(t, f.addr)
	h, _ := c.login("iqn.2026-11.org.mhcodi:test.node-a.no.such")
	assert.Equal(t, byte(2), h[36], "initiator error class")
	assert.Equal(t, byte(3), h[37], "not found")
	c.expectClosed()
	assert.Empty(t, f.srv.Sessions())
}

func TestWriteWithR2TAndReadBack(t *testing.T) {
	f := newFixture(t, nil)
	c := loggedIn(t, f, "ImmediateData", "No", "InitialR2T", "Yes", "MaxBurstLength", "4096", "MaxRecvDataSegmentLength", "4096")
	payload := bytes.Repeat([]byte{0x5a, 0xa5, 1, 2}, 16384/4)
	itt := c.scsiCmd(write10(8, 32), false, true, uint32(len(payload)), nil, true)
	sent := 0
	for sent < len(payload) {
		h, _ := c.recv()
		require.Equal(t, pdu.OpR2T, h.Opcode())
		off, n := h.U32(pdu.OffOffset), h.U32(pdu.OffResidual)
		assert.LessOrEqual(t, n, uint32(4096), "R2T within MaxBurstLength")
		var d pdu.Header
		d.SetOpcode(pdu.OpDataOut)
		d[1] = 0x80
		d.SetITT(itt)
		d.PutU32(pdu.OffTTT, h.U32(pdu.OffTTT))
		d.PutU32(pdu.OffOffset, off)
		c.send(&d, payload[off:off+n])
		sent += int(n)
	}
	h, _ := c.recv()
	require.Equal(t, pdu.OpSCSIResp, h.Opcode())
	assert.Equal(t, byte(0), h[3], "GOOD")
	assert.Equal(t, payload, f.dev.bytes(8*512, len(payload)))

	c.scsiCmd(read10(8, 32), true, false, uint32(len(payload)), nil, true)
	var got []byte
	for {
		h, data := c.recv()
		require.Equal(t, pdu.OpDataIn, h.Opcode())
		assert.LessOrEqual(t, len(data), 4096, "Data-In within the initiator's MaxRecvDataSegmentLength")
		got = append(got, data...)
		if h[1]&0x01 != 0 {
			assert.Equal(t, byte(0), h[3])
			break
		}
	}
	assert.Equal(t, payload, got)
}

func TestResiduals(t *testing.T) {
	f := newFixture(t, nil)
	c := loggedIn(t, f)
	// READ10 of 1 block with an expected length of 0: GOOD, overflow 512.
	c.scsiCmd(read10(0, 1), true, false, 0, nil, true)
	h, _ := c.recv()
	require.Equal(t, pdu.OpSCSIResp, h.Opcode())
	assert.Equal(t, byte(0x04), h[1]&0x06, "O bit")
	assert.Equal(t, uint32(512), h.U32(pdu.OffResidual))
	// WRITE10 of 2 blocks with 1 block of data: only that block is written.
	f.dev.WriteAt([]byte{0x77}, 1024)
	data := bytes.Repeat([]byte{0x11}, 512)
	c.scsiCmd(write10(1, 2), false, true, 512, data, true)
	h, _ = c.recv()
	require.Equal(t, pdu.OpSCSIResp, h.Opcode())
	assert.Equal(t, byte(0x04), h[1]&0x06, "O bit")
	assert.Equal(t, uint32(512), h.U32(pdu.OffResidual))
	assert.Equal(t, data, f.dev.bytes(512, 512))
	assert.Equal(t, []byte{0x77}, f.dev.bytes(1024, 1), "the block without data is untouched")
}

func TestUnknownOpcodeRejected(t *testing.T) {
	f := newFixture(t, nil)
	c := loggedIn(t, f)
	var h pdu.Header
	h.SetOpcode(0x1c) // a vendor opcode nobody serves
	h[1] = 0x80
	h.SetITT(c.nextITT())
	c.send(&h, nil)
	r, data := c.recv()
	require.Equal(t, pdu.OpReject, r.Opcode())
	assert.Equal(t, byte(rejectNotSupported), r[2])
	assert.Equal(t, h[:], data, "the reject carries the offending header")
	nh, _ := c.nop()
	assert.Equal(t, pdu.OpNOPIn, nh.Opcode(), "the session goes on")
}

func TestCmdSNOutsideWindowIgnored(t *testing.T) {
	f := newFixture(t, nil)
	c := loggedIn(t, f)
	saved := c.cmdSN
	c.cmdSN += 1000 // far beyond MaxCmdSN
	c.scsiCmd(read10(0, 1), true, false, 512, nil, true)
	c.cmdSN = saved
	h, _ := c.nop()
	assert.Equal(t, pdu.OpNOPIn, h.Opcode(), "the out-of-window command got no answer; the NOP did")
}

func TestOversizedDataDropsConnection(t *testing.T) {
	f := newFixture(t, nil)
	c := loggedIn(t, f)
	var h pdu.Header
	h.SetOpcode(pdu.OpNOPOut)
	h[1] = 0x80
	h.SetITT(c.nextITT())
	h.PutU32(pdu.OffTTT, pdu.Reserved)
	h.PutU32(pdu.OffCmdSN, c.cmdSN)
	// The target rejects the PDU on its header and closes without reading
	// the megabyte behind it, so the client's write races the close and may
	// end in ECONNRESET or EPIPE: that is the behaviour under test, not a
	// failure. A small send buffer makes the race certain rather than 1 in
	// 30, and the write runs on its own goroutine so that a target that
	// neither reads nor closes shows up as expectClosed's timeout, not as a
	// hung test.
	require.NoError(t, c.nc.(*net.TCPConn).SetWriteBuffer(4096))
	wrote := make(chan error, 1)
	go func() { wrote <- c.w.WritePDU(&h, make([]byte, 1<<20)) }() // MaxRecvDataSegmentLength is 8192
	r, _ := c.recv()
	assert.Equal(t, pdu.OpReject, r.Opcode())
	c.expectClosed()
	require.Eventually(t, func() bool { return len(f.srv.Sessions()) == 0 }, 5*time.Second, 10*time.Millisecond)
	c.nc.Close()
	if err := <-wrote; err != nil {
		t.Logf("the client's write ended as expected when the target dropped the connection: %v", err)
	}
}

func TestGarbageDuringLogin(t *testing.T) {
	f := newFixture(t, nil)
	c := dial(t, f.addr)
	_, err := c.nc.Write(bytes.Repeat([]byte{0xff}, 200))
	require.NoError(t, err)
	c.expectClosed()
	// The server still serves.
	loggedIn(t, f)
}

func TestAbortTaskWaitingForData(t *testing.T) {
	f := newFixture(t, nil)
	c := loggedIn(t, f, "ImmediateData", "No", "InitialR2T", "Yes")
	itt := c.scsiCmd(write10(0, 8), false, true, 4096, nil, true)
	r2t, _ := c.recv()
	require.Equal(t, pdu.OpR2T, r2t.Opcode())
	resp := c.abortTask(itt, c.cmdSN-1)
	require.Equal(t, pdu.OpTaskMgmtResp, resp.Opcode())
	assert.Equal(t, byte(tmfComplete), resp[2])
	nh, _ := c.nop()
	assert.Equal(t, pdu.OpNOPIn, nh.Opcode(), "no SCSI Response for the aborted task came first")
	assert.Equal(t, make([]byte, 4096), f.dev.bytes(0, 4096), "nothing written")
}

func TestSessionReinstatement(t *testing.T) {
	f := newFixture(t, nil)
	old := loggedIn(t, f)
	fresh := loggedIn(t, f) // same initiator name and ISID
	old.expectClosed()
	h, _ := fresh.nop()
	assert.Equal(t, pdu.OpNOPIn, h.Opcode())
	assert.Len(t, f.srv.Sessions(), 1)
}

func TestDropSessions(t *testing.T) {
	f := newFixture(t, nil)
	c := loggedIn(t, f)
	n := f.srv.DropSessions("fenced", func(s SessionInfo) bool { return s.Initiator == testInitiator })
	assert.Equal(t, 1, n)
	c.expectClosed()
	assert.Empty(t, f.srv.Sessions())
}

func TestDiscoverySendTargets(t *testing.T) {
	f := newFixture(t, nil)
	c := dial(t, f.addr)
	h, _ := c.login("")
	require.Equal(t, byte(0), h[36])
	var th pdu.Header
	th.SetOpcode(pdu.OpTextReq)
	th[1] = 0x80
	th.SetITT(c.nextITT())
	th.PutU32(pdu.OffTTT, pdu.Reserved)
	th.PutU32(pdu.OffCmdSN, c.cmdSN)
	c.cmdSN++
	c.send(&th, text.EncodeText([]text.KV{{Key: "SendTargets", Value: "All"}}))
	r, data := c.recv()
	require.Equal(t, pdu.OpTextResp, r.Opcode())
	assert.Contains(t, string(data), "TargetName="+testTarget)
	assert.Contains(t, string(data), "TargetAddress=127.0.0.1:3260,1")
	// SCSI commands have no place in a discovery session.
	c.scsiCmd(read10(0, 1), true, false, 512, nil, true)
	rj, _ := c.recv()
	assert.Equal(t, pdu.OpReject, rj.Opcode())
	c.expectClosed()
}

func TestNOPInPingDropsDeadInitiator(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.NopInterval, c.NopTimeout = 100*time.Millisecond, 200*time.Millisecond })
	c := loggedIn(t, f)
	// Answer nothing: read the ping, then expect the drop.
	h, _ := c.recv()
	require.Equal(t, pdu.OpNOPIn, h.Opcode())
	assert.Equal(t, uint32(pdu.Reserved), h.ITT(), "an unsolicited ping")
	c.expectClosed()
}

func TestShutdownWaits(t *testing.T) {
	f := newFixture(t, nil)
	loggedIn(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, f.srv.Shutdown(ctx, true))
	assert.Empty(t, f.srv.Sessions())
}

func TestAbortTaskAlreadyDone(t *testing.T) {
	f := newFixture(t, nil)
	c := loggedIn(t, f)
	writeSN := c.cmdSN
	itt := c.scsiCmd(write10(0, 1), false, true, 512, make([]byte, 512), true)
	h, _ := c.recv()
	require.Equal(t, pdu.OpSCSIResp, h.Opcode(), "the write completes")
	resp := c.abortTask(itt, writeSN) // RefCmdSN: below ExpCmdSN now
	require.Equal(t, pdu.OpTaskMgmtResp, resp.Opcode())
	assert.Equal(t, byte(tmfNoTask), resp[2], "a finished task does not exist any more (RFC 7143 §11.5.1 c)")
}

func TestIdleKick(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.IdleKick = 50 * time.Millisecond })
	c := loggedIn(t, f)
	c.nop() // activity, then silence
	h, _ := c.recv()
	require.Equal(t, pdu.OpNOPIn, h.Opcode(), "a nudge after the initiator went quiet")
	assert.Equal(t, uint32(pdu.Reserved), h.ITT())
	assert.Equal(t, uint32(pdu.Reserved), h.U32(pdu.OffTTT), "it asks for no answer")
	assert.Equal(t, c.cmdSN, h.U32(pdu.OffExpSN), "it carries the CmdSN window")
	// Only one per quiet spell.
	c.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var hh pdu.Header
	assert.Error(t, c.r.ReadHeader(&hh), "no second nudge without new activity")
}
