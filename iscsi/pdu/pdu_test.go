package pdu

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// RFC 7143 Appendix B.4 gives CRC32C test vectors: 32 bytes of zeros give
// 0x8a9136aa, 32 bytes of 0xff give 0x62a8ab43, and 0..31 give 0x46dd794e.
// The value on the wire is little-endian (the bytes in the RFC's examples).
func TestDigestVectors(t *testing.T) {
	zeros := make([]byte, 32)
	ones := bytes.Repeat([]byte{0xff}, 32)
	inc := make([]byte, 32)
	for i := range inc {
		inc[i] = byte(i)
	}
	assert.Equal(t, uint32(0x8a9136aa), Digest(zeros))
	assert.Equal(t, uint32(0x62a8ab43), Digest(ones))
	assert.Equal(t, uint32(0x46dd794e), Digest(inc))
}

func TestLUN(t *testing.T) {
	for _, lun := range []uint64{0, 1, 255, 256, 16383} {
		got, ok := DecodeLUN(EncodeLUN(lun))
		assert.True(t, ok, lun)
		assert.Equal(t, lun, got)
	}
	assert.Equal(t, uint64(0x0001000000000000), EncodeLUN(1))
	assert.Equal(t, uint64(0x4100000000000000), EncodeLUN(256))
	_, ok := DecodeLUN(0x0101000000000000) // bus 1
	assert.False(t, ok)
	_, ok = DecodeLUN(0x0001000100000000) // second level
	assert.False(t, ok)
	_, ok = DecodeLUN(0xc000000000000000) // extended addressing
	assert.False(t, ok)
}

func roundTrip(t *testing.T, d Digests, dataLen int) {
	var h Header
	h.SetOpcode(OpDataIn)
	h[1] = 0x81
	h.SetITT(0x12345678)
	h.PutU32(OffDataSN, 7)
	data := make([]byte, dataLen)
	for i := range data {
		data[i] = byte(i * 7)
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Digests = d
	require.NoError(t, w.WritePDU(&h, data))
	want := BHSLen + dataLen + Padding(dataLen)
	if d.Header {
		want += 4
	}
	if d.Data && dataLen > 0 {
		want += 4
	}
	require.Equal(t, want, buf.Len())
	p, n, err := Decode(buf.Bytes(), d, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, want, n)
	assert.Equal(t, h, p.Header)
	assert.Equal(t, data, p.Data)
}

func TestRoundTrip(t *testing.T) {
	for _, d := range []Digests{{}, {Header: true}, {Data: true}, {true, true}} {
		for _, n := range []int{0, 1, 3, 4, 5, 512, 8193} {
			roundTrip(t, d, n)
		}
	}
}

func TestDigestErrors(t *testing.T) {
	var h Header
	h.SetOpcode(OpNOPIn)
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Digests = Digests{true, true}
	require.NoError(t, w.WritePDU(&h, []byte("ping")))
	b := buf.Bytes()

	bad := append([]byte(nil), b...)
	bad[20] ^= 1 // header byte
	_, _, err := Decode(bad, Digests{true, true}, 8192)
	assert.ErrorIs(t, err, ErrHeaderDigest)

	bad = append([]byte(nil), b...)
	bad[BHSLen+4] ^= 1 // data byte
	_, _, err = Decode(bad, Digests{true, true}, 8192)
	assert.ErrorIs(t, err, ErrDataDigest)

	// Digest bytes are little-endian on the wire.
	assert.Equal(t, Digest(b[:BHSLen]), binary.LittleEndian.Uint32(b[BHSLen:]))
}

func TestLimits(t *testing.T) {
	var h Header
	h.SetOpcode(OpSCSICmd)
	h.SetDataLen(1 << 20)
	_, _, err := Decode(h[:], Digests{}, 8192)
	assert.ErrorIs(t, err, ErrDataTooLong)

	h.SetDataLen(100)
	_, _, err = Decode(h[:], Digests{}, 8192)
	assert.Error(t, err, "truncated data")
	_, _, err = Decode(h[:20], Digests{}, 8192)
	assert.Error(t, err, "truncated header")
}

func TestAHS(t *testing.T) {
	var h Header
	h.SetOpcode(OpSCSICmd)
	h[4] = 2 // 8 bytes of AHS
	b := append(h[:], 0, 6, 1, 0, 0, 0, 0, 0)
	p, n, err := Decode(b, Digests{}, 8192)
	require.NoError(t, err)
	assert.Equal(t, 56, n)
	assert.Len(t, p.AHS, 8)
}

func FuzzDecode(f *testing.F) {
	var h Header
	h.SetOpcode(OpSCSICmd)
	h.SetDataLen(5)
	f.Add(append(h[:], 1, 2, 3, 4, 5, 0, 0, 0), false, false)
	f.Add(h[:40], true, true)
	f.Fuzz(func(t *testing.T, b []byte, hd, dd bool) {
		p, n, err := Decode(b, Digests{hd, dd}, 65536)
		if err != nil {
			return
		}
		if n > len(b) || n < BHSLen {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		if len(p.Data) != p.Header.DataLen() || len(p.AHS) != p.Header.AHSLen() {
			t.Fatalf("lengths disagree with the header")
		}
	})
}

// A batch of Queue writes the same bytes as WritePDU one by one, with every
// digest setting, and Flush empties it.
func TestQueueFlush(t *testing.T) {
	for _, d := range []Digests{{}, {Header: true}, {Data: true}, {Header: true, Data: true}} {
		var one, batch bytes.Buffer
		w1, wb := NewWriter(&one), NewWriter(&batch)
		w1.Digests, wb.Digests = d, d
		for i, n := range []int{0, 1, 4, 4097, 0, 3} {
			var h Header
			h.SetOpcode(OpDataIn)
			h.SetITT(uint32(i))
			data := bytes.Repeat([]byte{byte(i + 1)}, n)
			h2 := h
			require.NoError(t, w1.WritePDU(&h, data))
			wb.Queue(&h2, data)
		}
		assert.Equal(t, one.Len(), wb.Queued(), "%+v", d)
		assert.Zero(t, batch.Len(), "nothing written before Flush")
		require.NoError(t, wb.Flush())
		assert.Equal(t, one.Bytes(), batch.Bytes(), "%+v", d)
		assert.Zero(t, wb.Queued())
		require.NoError(t, wb.Flush())
		assert.Equal(t, one.Len(), batch.Len(), "an empty Flush writes nothing")
		r := NewReader(bytes.NewReader(batch.Bytes()), 64)
		r.Digests, r.MaxDataLen = d, 1<<20
		var h Header
		require.NoError(t, r.ReadHeader(&h))
		assert.Equal(t, 64-BHSLen-map[bool]int{false: 0, true: 4}[d.Header], r.Buffered())
	}
}
