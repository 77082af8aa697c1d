package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// twoNodeWithSecrets writes two-node.yaml pointing at a secrets file with
// text, mode perm, and loads the cluster.
func twoNodeWithSecrets(t *testing.T, text string, perm os.FileMode) (*Config, string) {
	t.Helper()
	dir := t.TempDir()
	base := readExample(t, "two-node.yaml")
	cfgText := strings.Replace(base, "chap_secrets: /etc/mhcodi/chap-secrets.yaml", "chap_secrets: secrets.yaml", 1)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cluster.yaml"), []byte(cfgText), 0o644))
	sp := filepath.Join(dir, "secrets.yaml")
	require.NoError(t, os.WriteFile(sp, []byte(text), perm))
	require.NoError(t, os.Chmod(sp, perm))
	c, err := Load(filepath.Join(dir, "cluster.yaml"))
	require.NoError(t, err)
	return c, sp
}

const goodSecrets = `nodes:
  node-a:
    initiator: node-a-initiator-secret
    target: node-a-target-secret
  node-b:
    initiator: node-b-initiator-secret
`

func TestCHAPSecrets(t *testing.T) {
	c, _ := twoNodeWithSecrets(t, goodSecrets, 0o600)
	s, err := c.LoadCHAPSecrets()
	require.NoError(t, err)
	user, secret, ok := s.InitiatorCredentials(c, "node-b")
	require.True(t, ok)
	assert.Equal(t, "iqn.2026-11.org.example:prod.node-b.initiator", user)
	assert.Equal(t, "node-b-initiator-secret", secret)
	n, ok := c.NodeOfInitiator(user)
	assert.True(t, ok)
	assert.Equal(t, "node-b", n)
	_, ok = c.NodeOfInitiator("iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test")
	assert.False(t, ok)
	_, ok = c.NodeOfInitiator("iqn.2026-11.org.example:other.node-b.initiator")
	assert.False(t, ok, "another cluster's node")
}

func TestCHAPSecretsErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		perm       os.FileMode
		want       string
	}{
		{"world readable", goodSecrets, 0o644, "chmod 600"},
		{"short", strings.Replace(goodSecrets, "node-b-initiator-secret", "short", 1), 0o600, "nodes.node-b.initiator: is 5 bytes"},
		{"missing", strings.Replace(goodSecrets, "    initiator: node-b-initiator-secret\n", "    target: node-b-target-secret\n", 1), 0o600, "nodes.node-b.initiator: missing"},
		{"duplicate", strings.Replace(goodSecrets, "node-b-initiator-secret", "node-a-initiator-secret", 1), 0o600, "is the same secret as nodes.node-a.initiator"},
		{"unknown node", goodSecrets + "  node-z:\n    initiator: node-z-initiator-secret\n", 0o600, `nodes.node-z: node "node-z" is not defined`},
		{"unknown key", strings.Replace(goodSecrets, "    target: node-a", "    targt: node-a", 1), 0o600, `nodes.node-a.targt: unknown key "targt" (did you mean "target"?)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, p := twoNodeWithSecrets(t, tc.text, tc.perm)
			_, err := c.LoadCHAPSecrets()
			require.Error(t, err)
			assert.Contains(t, err.Error(), p+": ")
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
