package console

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mhcodi/mhcodi/internal/syncbuf"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAttachDetach(t *testing.T) {
	guest, host := net.Pipe()
	inR, inW := io.Pipe()
	out := &syncbuf.Buffer{}
	type res struct {
		detached bool
		err      error
	}
	done := make(chan res, 1)
	go func() {
		d, err := Attach(context.Background(), host, inR, out)
		done <- res{d, err}
	}()
	// The guest writes; the terminal shows it.
	_, err := guest.Write([]byte("login: "))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return out.String() == "login: " }, 2*time.Second, 10*time.Millisecond)
	// What is typed reaches the guest, up to Ctrl-].
	got := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(guest).ReadString('\n')
		got <- line
	}()
	_, err = inW.Write([]byte("uname\n"))
	require.NoError(t, err)
	assert.Equal(t, "uname\n", <-got)
	// net.Pipe writes wait for the reader: take what reaches the guest.
	tail := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(guest)
		tail <- b
	}()
	_, err = inW.Write([]byte{'x', Escape, 'y'})
	require.NoError(t, err)
	r := <-done
	assert.True(t, r.detached)
	assert.NoError(t, r.err)
	// The byte before Ctrl-] got through, the one after did not, and the
	// console connection is closed (the hypervisor's end sees EOF).
	assert.Equal(t, "x", string(<-tail))
}

func TestAttachConsoleCloses(t *testing.T) {
	guest, host := net.Pipe()
	inR, _ := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := Attach(context.Background(), host, inR, io.Discard)
		done <- err
	}()
	guest.Close()
	err := <-done
	assert.ErrorContains(t, err, "the console closed")
}

func TestLock(t *testing.T) {
	dir := t.TempDir()
	unlock, err := Lock(dir)
	require.NoError(t, err)
	// flock locks belong to the open file: a second open in this process
	// is refused as another attach would be.
	_, err = Lock(dir)
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrBusy))
	assert.Contains(t, err.Error(), "by pid ")
	unlock()
	unlock2, err := Lock(dir)
	require.NoError(t, err)
	unlock2()
}
