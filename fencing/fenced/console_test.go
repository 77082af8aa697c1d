package fenced

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
)

// TestConsoleUpgrade: fenced splices an upgraded connection to the
// console socket of a guest that runs here; a second attach is refused
// while the first lasts, and a guest that runs nowhere is said so.
func TestConsoleUpgrade(t *testing.T) {
	cfg := testConfig(t, false, "")
	s, _, drv, _ := newTestServer(t, cfg, "node-a")
	s.peerFn = func(node string) api.Client { return unreachableClient{node} }
	dir := shortDir(t)
	sock := filepath.Join(dir, hypervisor.ConsoleSocket)
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }() // the guest echoes
		}
	}()
	drv.mu.Lock()
	drv.running["web"] = hypervisor.Status{Name: "web", State: hypervisor.StateRunning, ConsoleSocket: sock}
	drv.mu.Unlock()

	srv := httptest.NewServer(s.localHandler())
	defer srv.Close()
	cc := api.NewClientWithTransport("node-a", srv.URL, &http.Transport{}).(api.ConsoleClient)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c1, err := cc.Console(ctx, "web")
	require.NoError(t, err)
	_, err = c1.Write([]byte("uname\n"))
	require.NoError(t, err)
	buf := make([]byte, 6)
	_, err = io.ReadFull(c1, buf)
	require.NoError(t, err)
	assert.Equal(t, "uname\n", string(buf))

	_, err = cc.Console(ctx, "web")
	require.Error(t, err)
	assert.Equal(t, http.StatusConflict, api.StatusOf(err))
	assert.ErrorContains(t, err, "the console is attached elsewhere")

	require.NoError(t, c1.Close())
	require.Eventually(t, func() bool {
		c, err := cc.Console(ctx, "web")
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 5*time.Second, 50*time.Millisecond, "the console is free again once the first attach ends")

	_, err = cc.Console(ctx, "db")
	require.Error(t, err)
	assert.Equal(t, http.StatusNotFound, api.StatusOf(err))
	assert.ErrorContains(t, err, "db does not run on any node that answers (node-b did not answer)")
}

// shortDir is a temporary directory short enough for a unix socket.
func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("/tmp", "mhcfc")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

var errUnreachable = errors.New("dial tcp: connection refused")

// unreachableClient is a peer that does not answer.
type unreachableClient struct{ node string }

func (u unreachableClient) Node() string { return u.node }
func (u unreachableClient) NodeStatus(context.Context) (api.NodeStatus, error) {
	return api.NodeStatus{}, errUnreachable
}
func (u unreachableClient) Ledger(context.Context) (api.LedgerResponse, error) {
	return api.LedgerResponse{}, errUnreachable
}
func (u unreachableClient) Fence(context.Context, api.FenceRequest) error { return errUnreachable }
func (u unreachableClient) Start(context.Context, string, api.StartRequest) error {
	return errUnreachable
}
func (u unreachableClient) Stop(context.Context, string, api.StopRequest) error {
	return errUnreachable
}
func (u unreachableClient) Destroy(context.Context, string) error { return errUnreachable }
func (u unreachableClient) Op(context.Context, api.OpRequest, func(api.Progress)) error {
	return errUnreachable
}
func (u unreachableClient) Join(context.Context, api.JoinRequest) (api.JoinResponse, error) {
	return api.JoinResponse{}, errUnreachable
}
