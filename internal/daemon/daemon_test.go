package daemon

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/internal/sdnotify"
)

func TestEnvOr(t *testing.T) {
	t.Setenv("MHCODI_TEST_ENVOR", "")
	assert.Equal(t, "def", EnvOr("MHCODI_TEST_ENVOR", "def"))
	t.Setenv("MHCODI_TEST_ENVOR", "set")
	assert.Equal(t, "set", EnvOr("MHCODI_TEST_ENVOR", "def"))
}

func TestFlags(t *testing.T) {
	t.Setenv("MHCODI_CONFIG", "")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	cfg, level := ConfigFlag(fs), LogLevelFlag(fs)
	assert.Equal(t, configs.DefaultPath, *cfg)
	assert.Equal(t, "info", *level)
	require.NoError(t, fs.Parse([]string{"--config", "/c.yaml", "--log-level", "debug"}))
	assert.Equal(t, "/c.yaml", *cfg)
	assert.Equal(t, "debug", *level)

	t.Setenv("MHCODI_CONFIG", "/env.yaml")
	assert.Equal(t, "/env.yaml", *ConfigFlag(flag.NewFlagSet("y", flag.ContinueOnError)))
}

func TestLogger(t *testing.T) {
	var out bytes.Buffer
	log, ok := Logger("mhcodi-x", "warn", &out)
	require.True(t, ok)
	log.Info("hidden")
	log.Warn("shown")
	assert.NotContains(t, out.String(), "hidden")
	assert.Contains(t, out.String(), "shown")

	out.Reset()
	_, ok = Logger("mhcodi-x", "loud", &out)
	assert.False(t, ok)
	assert.Regexp(t, `^mhcodi-x: --log-level: .*loud`, out.String())
}

func TestReload(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	notify := sdnotify.New(log) // outside systemd: no-ops
	good := filepath.Join("..", "..", "configs", "examples", "loopback.yaml")

	var got *configs.Config
	Reload(notify, log, good, func(c *configs.Config) error { got = c; return nil }, "reload failed", func() []any { return []any{"exports", 3} })
	require.NotNil(t, got)
	assert.Contains(t, out.String(), `msg="configuration reloaded" exports=3`)

	out.Reset()
	Reload(notify, log, good, func(*configs.Config) error { return errors.New("refused") }, "reload failed; keeping it", nil)
	assert.Contains(t, out.String(), `level=ERROR msg="reload failed; keeping it" err=refused`)

	out.Reset()
	called := false
	Reload(notify, log, filepath.Join(t.TempDir(), "missing.yaml"), func(*configs.Config) error { called = true; return nil }, "reload failed", nil)
	assert.False(t, called)
	assert.Contains(t, out.String(), `level=ERROR msg="reload failed"`)
}
