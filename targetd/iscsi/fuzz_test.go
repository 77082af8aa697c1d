package iscsi

import (
	"testing"
	"time"

	"github.com/mhcodi/mhcodi/iscsi/pdu"
)

// FuzzFullFeature logs in and then sends arbitrary bytes as the session's
// PDUs. Whatever they are, the target must not panic or hang: it answers,
// rejects or drops the connection, and then still serves a new login.
func FuzzFullFeature(f *testing.F) {
	var nop pdu.Header
	nop.SetOpcode(pdu.OpNOPOut)
	nop[1] = 0x80
	nop.SetITT(7)
	nop.PutU32(pdu.OffTTT, pdu.Reserved)
	nop.PutU32(pdu.OffCmdSN, 1)
	f.Add(append([]byte(nil), nop[:]...))
	var cmd pdu.Header
	cmd.SetOpcode(pdu.OpSCSICmd)
	cmd[1] = 0xa1
	cmd.SetITT(8)
	cmd.PutU32(pdu.OffTTT, 4096)
	cmd.PutU32(pdu.OffCmdSN, 1)
	copy(cmd.CDB(), write10(0, 8))
	f.Add(append(append([]byte(nil), cmd[:]...), make([]byte, 512)...))
	var dout pdu.Header
	dout.SetOpcode(pdu.OpDataOut)
	dout[1] = 0x80
	dout.SetITT(8)
	dout.PutU32(pdu.OffTTT, 1)
	dout.SetDataLen(512)
	f.Add(append(append(append([]byte(nil), cmd[:]...), dout[:]...), make([]byte, 512)...))
	f.Add([]byte{0xff, 0xff, 0xff})

	fx := newFixture(&testing.T{}, nil)
	f.Cleanup(func() { fx.srv.Close() })
	f.Fuzz(func(t *testing.T, b []byte) {
		c := loggedIn(t, fx)
		c.nc.SetDeadline(time.Now().Add(2 * time.Second))
		c.nc.Write(b)
		// Drain what the target says until it stops or closes.
		buf := make([]byte, 64<<10)
		c.nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		for {
			if _, err := c.nc.Read(buf); err != nil {
				break
			}
		}
		c.nc.Close()
		// The target still works.
		c2 := loggedIn(t, fx)
		h, _ := c2.nop()
		if h.Opcode() != pdu.OpNOPIn {
			t.Fatalf("after fuzz input the target answers a NOP-Out with %v", h.Opcode())
		}
		c2.nc.Close()
	})
}
