package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestClusterInit(t *testing.T) {
	out := filepath.Join(t.TempDir(), "tls")
	code, stdout, errs := run("cluster", "init", "--config", twoNode, "--out", out)
	require.Equal(t, ExitOK, code, errs)
	assert.Contains(t, stdout, out+": 4 certificate(s) written, 0 kept.")
	assert.Regexp(t, `(?m)^node-a\s+`+filepath.Join(out, "node-a.crt")+`\s+created$`, stdout)
	for _, f := range []string{"ca.crt", "ca.key", "node-a.crt", "node-a.key", "node-b.crt", "node-b.key", "admin.crt", "admin.key"} {
		assert.FileExists(t, filepath.Join(out, f))
	}
	ca, err := os.ReadFile(filepath.Join(out, "ca.crt"))
	require.NoError(t, err)

	// Again: nothing replaced.
	code, stdout, errs = run("cluster", "init", "--config", twoNode, "--out", out)
	require.Equal(t, ExitOK, code, errs)
	assert.Contains(t, stdout, "0 certificate(s) written, 4 kept.")
	again, _ := os.ReadFile(filepath.Join(out, "ca.crt"))
	assert.Equal(t, ca, again)

	// --force: a new CA.
	code, stdout, errs = run("cluster", "init", "--config", twoNode, "--out", out, "--force")
	require.Equal(t, ExitOK, code, errs)
	assert.Regexp(t, `(?m)^ca\s+\S+\s+replaced$`, stdout)
	again, _ = os.ReadFile(filepath.Join(out, "ca.crt"))
	assert.NotEqual(t, ca, again)

	// A CA without its key: refused, exit 1, says what to do.
	require.NoError(t, os.Remove(filepath.Join(out, "ca.key")))
	code, _, errs = run("cluster", "init", "--config", twoNode, "--out", out)
	assert.Equal(t, ExitInvalid, code)
	assert.Contains(t, errs, "--force")

	code, _, errs = run("cluster", "init", "--config", twoNode, "extra")
	assert.Equal(t, ExitUsage, code, errs)
}

func TestClusterInitDefaultDir(t *testing.T) {
	base, err := os.ReadFile(twoNode)
	require.NoError(t, err)
	dir := t.TempDir()
	p := filepath.Join(dir, "cluster.yaml")
	y := strings.Replace(string(base), "security:\n", "security:\n  tls_dir: tls\n", 1)
	require.NoError(t, os.WriteFile(p, []byte(y), 0o644))
	code, stdout, errs := run("cluster", "init", "--config", p)
	require.Equal(t, ExitOK, code, errs)
	assert.Contains(t, stdout, filepath.Join(dir, "tls")+":")
	assert.FileExists(t, filepath.Join(dir, "tls", "admin.crt"))
}
