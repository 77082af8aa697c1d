package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// memBackend is an in-memory disk.
type memBackend struct {
	mu      sync.Mutex
	data    []byte
	flushes int
	fuas    int
	failAt  int64 // reads and writes touching this offset fail with failErr
	failErr error
}

func newMem(size int) *memBackend { return &memBackend{data: make([]byte, size), failAt: -1} }

func (m *memBackend) fails(p []byte, off int64) bool {
	return m.failAt >= off && m.failAt < off+int64(len(p))
}

func (m *memBackend) ReadAt(_ context.Context, p []byte, off int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fails(p, off) {
		return m.failErr
	}
	copy(p, m.data[off:])
	return nil
}

func (m *memBackend) WriteAt(_ context.Context, p []byte, off int64, fua bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fails(p, off) {
		return m.failErr
	}
	if fua {
		m.fuas++
	}
	copy(m.data[off:], p)
	return nil
}

func (m *memBackend) Flush(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flushes++
	return nil
}

// snapshot copies the data under the lock (the race detector cannot see
// the ordering that qemu-io's exit gives).
func (m *memBackend) snapshot() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.data...)
}

func (m *memBackend) Size() int64       { return int64(len(m.data)) }
func (m *memBackend) BlockSize() uint32 { return 512 }

func serveUnix(t *testing.T, s *Server) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		assert.ErrorIs(t, <-done, ErrServerClosed)
	})
	return sock
}

func qemuIO(t *testing.T, sock string, cmds ...string) (string, error) {
	t.Helper()
	p, err := exec.LookPath("qemu-io")
	if err != nil {
		t.Fatalf("qemu-io missing: run `make deps` (qemu-utils): %v", err)
	}
	args := []string{"--image-opts", "driver=nbd,server.type=unix,server.path=" + sock}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	return string(out), err
}

// QEMU's own NBD client against the server.
func TestQemuIO(t *testing.T) {
	m := newMem(8 << 20)
	sock := serveUnix(t, &Server{Name: "iqn.test", Backend: m})
	out, err := qemuIO(t, sock, "write -P 0xab 0 1M", "write -f -P 0xcd 1M 64k", "flush", "read -P 0xab 0 1M",
		"read -P 0xcd 1M 64k", "write -z 2M 1M", "read -P 0 2M 1M", "discard 4M 1M", "aio_write -P 0x11 5M 512", "aio_flush")
	require.NoError(t, err, out)
	assert.NotContains(t, out, "Pattern verification failed")
	data := m.snapshot()
	assert.Equal(t, bytes.Repeat([]byte{0xab}, 1<<20), data[:1<<20])
	assert.Equal(t, bytes.Repeat([]byte{0xcd}, 64<<10), data[1<<20:1<<20+64<<10])
	assert.Equal(t, bytes.Repeat([]byte{0x11}, 512), data[5<<20:5<<20+512])
	m.mu.Lock()
	assert.GreaterOrEqual(t, m.flushes, 1)
	assert.GreaterOrEqual(t, m.fuas, 1)
	m.mu.Unlock()

	// An unaligned write: QEMU reads, modifies and writes whole blocks
	// because we advertise a 512-byte minimum.
	out, err = qemuIO(t, sock, "write -P 0x77 100 10", "read -P 0x77 100 10", "read -P 0xab 0 100")
	require.NoError(t, err, out)
	assert.NotContains(t, out, "Pattern verification failed")
}

func TestQemuIOErrorIsEIO(t *testing.T) {
	m := newMem(1 << 20)
	m.failAt, m.failErr = 4096, io.ErrUnexpectedEOF
	sock := serveUnix(t, &Server{Name: "x", Backend: m})
	out, _ := qemuIO(t, sock, "read 0 8k")
	assert.Contains(t, out, "Input/output error")
	m.mu.Lock()
	m.failErr = ENOSPC
	m.mu.Unlock()
	out, _ = qemuIO(t, sock, "write 0 8k")
	assert.Contains(t, out, "No space left on device")
}

// client is a minimal hand-rolled client for negotiation corner cases.
type client struct {
	t *testing.T
	c net.Conn
}

func dialRaw(t *testing.T, sock string, flags uint32) *client {
	c, err := net.Dial("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	hello := make([]byte, 18)
	_, err = io.ReadFull(c, hello)
	require.NoError(t, err)
	assert.Equal(t, uint64(magicInit), binary.BigEndian.Uint64(hello))
	assert.Equal(t, uint64(magicOpt), binary.BigEndian.Uint64(hello[8:]))
	assert.Equal(t, uint16(3), binary.BigEndian.Uint16(hello[16:]))
	_, err = c.Write(binary.BigEndian.AppendUint32(nil, flags))
	require.NoError(t, err)
	return &client{t, c}
}

func (c *client) option(opt uint32, data []byte) {
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	_, err := c.c.Write(append(b, data...))
	require.NoError(c.t, err)
}

func (c *client) reply() (opt, typ uint32, data []byte) {
	h := make([]byte, 20)
	_, err := io.ReadFull(c.c, h)
	require.NoError(c.t, err)
	require.Equal(c.t, uint64(magicOptReply), binary.BigEndian.Uint64(h))
	data = make([]byte, binary.BigEndian.Uint32(h[16:]))
	_, err = io.ReadFull(c.c, data)
	require.NoError(c.t, err)
	return binary.BigEndian.Uint32(h[8:]), binary.BigEndian.Uint32(h[12:]), data
}

func goData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

func TestNegotiation(t *testing.T) {
	m := newMem(1 << 20)
	sock := serveUnix(t, &Server{Name: "iqn.x", Description: "leg", Backend: m})
	c := dialRaw(t, sock, flagFixedNewstyle|flagNoZeroes)

	c.option(optStructuredReply, nil)
	opt, typ, _ := c.reply()
	assert.Equal(t, uint32(optStructuredReply), opt)
	assert.Equal(t, uint32(repErrUnsup), typ)

	c.option(optList, nil)
	_, typ, data := c.reply()
	assert.Equal(t, uint32(repServer), typ)
	assert.Equal(t, append([]byte{0, 0, 0, 5}, "iqn.x"...), data)
	_, typ, _ = c.reply()
	assert.Equal(t, uint32(repAck), typ)

	c.option(optList, []byte{1})
	_, typ, _ = c.reply()
	assert.Equal(t, uint32(repErrInvalid), typ)

	c.option(optInfo, goData("nope"))
	_, typ, _ = c.reply()
	assert.Equal(t, uint32(repErrUnknown), typ)

	c.option(optInfo, []byte{0, 0, 0, 9, 'a'})
	_, typ, _ = c.reply()
	assert.Equal(t, uint32(repErrInvalid), typ)

	c.option(optInfo, goData("iqn.x", infoBlockSize, infoName, infoDescription, 99))
	_, typ, data = c.reply()
	assert.Equal(t, uint32(repInfo), typ)
	assert.Equal(t, infoExportData(1<<20, transmissionFlags), data)
	_, _, data = c.reply()
	assert.Equal(t, infoBlockSizeData(512, 4096, MaxPayload), data)
	_, _, data = c.reply()
	assert.Equal(t, infoStringData(infoName, "iqn.x"), data)
	_, _, data = c.reply()
	assert.Equal(t, infoStringData(infoDescription, "leg"), data)
	_, typ, _ = c.reply()
	assert.Equal(t, uint32(repAck), typ)

	// GO with the default (empty) name enters transmission.
	c.option(optGo, goData(""))
	_, typ, _ = c.reply()
	assert.Equal(t, uint32(repInfo), typ)
	_, typ, _ = c.reply()
	assert.Equal(t, uint32(repAck), typ)

	// Transmission: a write, a read beyond the end, an unknown command,
	// a read, then DISC.
	w := EncodeRequest(Request{Type: CmdWrite, Handle: 1, Offset: 512, Length: 4})
	_, err := c.c.Write(append(w, 1, 2, 3, 4))
	require.NoError(t, err)
	_, err = c.c.Write(EncodeRequest(Request{Type: CmdRead, Handle: 2, Offset: 1 << 20, Length: 512}))
	require.NoError(t, err)
	_, err = c.c.Write(EncodeRequest(Request{Type: 77, Handle: 3}))
	require.NoError(t, err)
	replies := map[uint64]uint32{}
	for range 3 {
		h := make([]byte, 16)
		_, err := io.ReadFull(c.c, h)
		require.NoError(t, err)
		assert.Equal(t, uint32(magicSimpleRep), binary.BigEndian.Uint32(h))
		replies[binary.BigEndian.Uint64(h[8:])] = binary.BigEndian.Uint32(h[4:])
	}
	assert.Equal(t, map[uint64]uint32{1: 0, 2: uint32(EINVAL), 3: uint32(EINVAL)}, replies)
	_, err = c.c.Write(EncodeRequest(Request{Type: CmdRead, Handle: 4, Offset: 512, Length: 4}))
	require.NoError(t, err)
	h := make([]byte, 20)
	_, err = io.ReadFull(c.c, h)
	require.NoError(t, err)
	assert.Equal(t, []byte{1, 2, 3, 4}, h[16:])
	_, err = c.c.Write(EncodeRequest(Request{Type: CmdDisc, Handle: 5}))
	require.NoError(t, err)
	_, err = c.c.Read(h)
	assert.ErrorIs(t, err, io.EOF, "the server closes after DISC")
}

func TestNegotiationExportNameAndZeroes(t *testing.T) {
	sock := serveUnix(t, &Server{Name: "e", Backend: newMem(4096)})
	c := dialRaw(t, sock, flagFixedNewstyle)
	c.option(optExportName, []byte("e"))
	b := make([]byte, 134)
	_, err := io.ReadFull(c.c, b)
	require.NoError(t, err)
	assert.Equal(t, uint64(4096), binary.BigEndian.Uint64(b))
	assert.Equal(t, uint16(transmissionFlags), binary.BigEndian.Uint16(b[8:]))
	assert.Equal(t, make([]byte, 124), b[10:])

	c = dialRaw(t, sock, flagFixedNewstyle|flagNoZeroes)
	c.option(optExportName, []byte("unknown"))
	_, err = c.c.Read(b)
	assert.ErrorIs(t, err, io.EOF, "an unknown EXPORT_NAME ends the connection")

	c = dialRaw(t, sock, flagFixedNewstyle|flagNoZeroes)
	c.option(optAbort, nil)
	_, typ, _ := c.reply()
	assert.Equal(t, uint32(repAck), typ)

	c = dialRaw(t, sock, 0) // oldstyle-ish client: refused
	_, err = c.c.Read(b)
	assert.ErrorIs(t, err, io.EOF)
}

func TestBadMagicDisconnects(t *testing.T) {
	sock := serveUnix(t, &Server{Name: "e", Backend: newMem(4096)})
	c := dialRaw(t, sock, flagFixedNewstyle|flagNoZeroes)
	c.option(optExportName, []byte("e"))
	b := make([]byte, 10)
	_, err := io.ReadFull(c.c, b)
	require.NoError(t, err)
	_, err = c.c.Write(make([]byte, RequestLen))
	require.NoError(t, err)
	_, err = c.c.Read(b)
	assert.ErrorIs(t, err, io.EOF)
}

func TestRequestCheck(t *testing.T) {
	const size = 1 << 20
	cases := []struct {
		r     Request
		errno Errno
		fatal bool
	}{
		{Request{Type: CmdRead, Offset: 0, Length: 4096}, 0, false},
		{Request{Type: CmdRead, Offset: size - 1, Length: 2}, EINVAL, false},
		{Request{Type: CmdRead, Offset: ^uint64(0), Length: 2}, EINVAL, false},
		{Request{Type: CmdRead, Length: MaxPayload + 1}, EOVERFLOW, false},
		{Request{Type: CmdWrite, Length: MaxPayload + 1}, EOVERFLOW, true},
		{Request{Type: CmdWrite, Offset: size, Length: 1}, ENOSPC, false},
		{Request{Type: CmdWrite, Flags: CmdFlagFUA, Length: 1}, 0, false},
		{Request{Type: CmdWrite, Flags: 1 << 9, Length: 1}, EINVAL, false},
		{Request{Type: CmdWriteZeroes, Offset: size - 10, Length: 11}, ENOSPC, false},
		{Request{Type: CmdFlush}, 0, false},
		{Request{Type: 99}, EINVAL, false},
	}
	for _, c := range cases {
		errno, fatal := c.r.Check(size)
		assert.Equal(t, c.errno, errno, "%+v", c.r)
		assert.Equal(t, c.fatal, fatal, "%+v", c.r)
	}
	r := Request{Flags: 1, Type: CmdWrite, Handle: 0xdeadbeef, Offset: 1234, Length: 99}
	got, err := DecodeRequest(EncodeRequest(r))
	require.NoError(t, err)
	assert.Equal(t, r, got)
	assert.Equal(t, 99, got.PayloadLen())
	_, err = DecodeRequest(make([]byte, 27))
	assert.Error(t, err)
	assert.Equal(t, EIO, ErrnoOf(io.EOF))
	assert.Equal(t, ENOSPC, ErrnoOf(ENOSPC))
}
