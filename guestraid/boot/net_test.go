package boot

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/mhcodi/mhcodi/guestraid/channel"
)

func TestConsoleShell(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ConsoleShell(ctx, inR, outW, &channel.Host{Guest: "demo"})
	read := func(until string) string {
		var b strings.Builder
		buf := make([]byte, 256)
		deadline := time.Now().Add(2 * time.Second)
		for !strings.Contains(b.String(), until) && time.Now().Before(deadline) {
			n, err := outR.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return b.String()
	}
	assert.Contains(t, read(ShellPrompt), ShellPrompt)
	go func() { _, _ = inW.Write([]byte("hostname\nip\nfrob\n")) }()
	out := read("unknown command")
	assert.Contains(t, out, "demo\r\n")
	assert.Contains(t, out, "lo - ")
	assert.Contains(t, out, "frob: unknown command")
}

func TestEcho(t *testing.T) {
	if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", EchoPort)); err != nil {
		t.Skipf("port %d is not free here (or not ours to take): %v", EchoPort, err)
	} else {
		ln.Close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Echo(ctx, slog.New(slog.DiscardHandler))
	var c net.Conn
	var err error
	for i := 0; i < 50; i++ {
		if c, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", EchoPort)); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("ping\n"))
	b := make([]byte, 5)
	_, err = io.ReadFull(c, b)
	assert.NoError(t, err)
	assert.Equal(t, "ping\n", string(b))
}
