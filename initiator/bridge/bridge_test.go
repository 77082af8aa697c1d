package bridge

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
)

func loadExample(t *testing.T) *configs.Config {
	t.Helper()
	cfg, err := configs.Load(filepath.Join("..", "..", "configs", "examples", "loopback.yaml"))
	require.NoError(t, err)
	return cfg
}

func TestNewResolvesRemoteLegs(t *testing.T) {
	cfg := loadExample(t)
	dir := t.TempDir()
	b, err := New(Options{Config: cfg, Node: "node-b", Guest: "demo", SocketDir: dir})
	require.NoError(t, err)
	require.Len(t, b.Legs(), 1)
	l := b.Legs()[0]
	assert.Equal(t, "root-node-a", l.Name)
	assert.Equal(t, "127.0.0.11:3260", l.Portal)
	assert.Equal(t, filepath.Join(dir, "root-node-a.sock"), l.Socket)
	assert.Equal(t, "iqn.2026-11.org.mhcodi:demo.node-a.demo.root", l.Info.TargetIQN)

	b, err = New(Options{Config: cfg, Node: "node-a", Guest: "demo", SocketDir: dir})
	require.NoError(t, err)
	assert.Equal(t, "root-node-b", b.Legs()[0].Name)

	_, err = New(Options{Config: cfg, Node: "node-z", Guest: "demo", SocketDir: dir})
	assert.ErrorContains(t, err, "node-z")
	_, err = New(Options{Config: cfg, Node: "node-a", Guest: "nope", SocketDir: dir})
	assert.ErrorContains(t, err, "nope")
	_, err = New(Options{Config: cfg, Node: "node-a", Guest: "demo", SocketDir: "/" + strings.Repeat("d", 120)})
	assert.ErrorContains(t, err, "longer than")
}

func TestListenWritesStatus(t *testing.T) {
	cfg := loadExample(t)
	dir := t.TempDir()
	b, err := New(Options{Config: cfg, Node: "node-b", Guest: "demo", SocketDir: dir})
	require.NoError(t, err)
	// A stale socket file from a previous run is replaced.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "root-node-a.sock"), nil, 0o600))
	require.NoError(t, b.Listen())
	defer b.closeListeners()
	fi, err := os.Stat(filepath.Join(dir, "root-node-a.sock"))
	require.NoError(t, err)
	assert.Equal(t, os.ModeSocket, fi.Mode().Type())
	data, err := os.ReadFile(b.StatusPath())
	require.NoError(t, err)
	var st Status
	require.NoError(t, json.Unmarshal(data, &st))
	assert.Equal(t, "node-b", st.Node)
	assert.Equal(t, "demo", st.Guest)
	require.Len(t, st.Legs, 1)
	assert.Equal(t, StateConnecting, st.Legs[0].State)
	assert.Equal(t, "127.0.0.11:3260", st.Legs[0].Portal)
}
