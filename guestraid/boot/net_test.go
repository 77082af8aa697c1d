package boot

import (
	"context"
	"io"
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
