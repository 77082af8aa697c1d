package nbd

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// FuzzDecodeRequest: decoding and checking any 28 bytes never panics, and
// a decoded request encodes back to the same bytes.
func FuzzDecodeRequest(f *testing.F) {
	f.Add(EncodeRequest(Request{Type: CmdRead, Length: 512}))
	f.Add(EncodeRequest(Request{Type: CmdWrite, Flags: CmdFlagFUA, Offset: ^uint64(0), Length: MaxPayload + 1}))
	f.Add(make([]byte, RequestLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			return
		}
		if errno, fatal := r.Check(1 << 20); fatal && errno == 0 {
			t.Fatal("a fatal verdict without an error value")
		}
		if r.PayloadLen() < 0 {
			t.Fatal("negative payload")
		}
		if !bytes.Equal(EncodeRequest(r), b[:RequestLen]) {
			t.Fatal("round trip differs")
		}
	})
}

// fuzzConn feeds a byte stream to ServeConn and swallows what it writes.
type fuzzConn struct{ r io.Reader }

func (c *fuzzConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *fuzzConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *fuzzConn) Close() error                { return nil }
func (c *fuzzConn) SetDeadline(time.Time) error { return nil }

// FuzzServeConn: any client byte stream (options, then requests) ends in
// an error or a clean close, never a panic or a hang.
func FuzzServeConn(f *testing.F) {
	hello := []byte{0, 0, 0, 3}
	opt := func(o uint32, d []byte) []byte {
		c := &client{}
		_ = c
		b := []byte("IHAVEOPT")
		b = append(b, byte(o>>24), byte(o>>16), byte(o>>8), byte(o))
		n := uint32(len(d))
		b = append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
		return append(b, d...)
	}
	seed := append(append([]byte{}, hello...), opt(optGo, goData(""))...)
	seed = append(seed, EncodeRequest(Request{Type: CmdWrite, Handle: 1, Length: 4})...)
	seed = append(seed, 1, 2, 3, 4)
	seed = append(seed, EncodeRequest(Request{Type: CmdRead, Handle: 2, Length: 4})...)
	seed = append(seed, EncodeRequest(Request{Type: CmdWriteZeroes, Handle: 3, Length: 4096})...)
	seed = append(seed, EncodeRequest(Request{Type: CmdFlush, Handle: 4})...)
	f.Add(seed)
	f.Add(append(append([]byte{}, hello...), opt(optList, nil)...))
	f.Add(append(append([]byte{}, hello...), opt(optExportName, nil)...))
	f.Add(append(append([]byte{}, hello...), opt(optInfo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0})...))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := &Server{Name: "x", Backend: newMem(64 << 10)}
		s.ServeConn(&fuzzConn{r: bytes.NewReader(b)})
	})
}
