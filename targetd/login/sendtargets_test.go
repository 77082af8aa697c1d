package login

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/iscsi/text"
)

func TestSendTargets(t *testing.T) {
	a := TargetInfo{Name: "iqn.2026-11.org.mhcodi:prod.node-b.web1.root", Portals: []Portal{{"192.0.2.2:3260", 1}}}
	b := TargetInfo{Name: "iqn.2026-11.org.mhcodi:prod.node-b.web1.data", Portals: []Portal{{"192.0.2.2:3260", 1}, {"198.51.100.2:3260", 2}}}
	targets := []TargetInfo{a, b}

	all := kvList("TargetName="+a.Name, "TargetAddress=192.0.2.2:3260,1",
		"TargetName="+b.Name, "TargetAddress=192.0.2.2:3260,1", "TargetAddress=198.51.100.2:3260,2")
	assert.Equal(t, all, SendTargets("All", targets))
	assert.Equal(t, all, SendTargets("", targets), "empty value: every target the caller passed")
	assert.Equal(t, kvList("TargetName="+b.Name, "TargetAddress=192.0.2.2:3260,1", "TargetAddress=198.51.100.2:3260,2"),
		SendTargets(b.Name, targets))
	assert.Equal(t, kvList("TargetName="+a.Name, "TargetAddress=192.0.2.2:3260,1"),
		SendTargets("IQN.2026-11.org.mhcodi:prod.node-b.WEB1.root", targets), "names compare case-insensitively")
	assert.Empty(t, SendTargets("iqn.2026-11.org.mhcodi:prod.node-b.web2.root", targets))
	assert.Empty(t, SendTargets("All", nil))
	assert.Empty(t, text.EncodeText(SendTargets("All", nil)), "no match: a Text Response without data")
}

func TestParseSendTargets(t *testing.T) {
	got, err := ParseSendTargets(textData("TargetName=iqn.a", "TargetAddress=[2001:db8::1]:3260,7", "TargetName=iqn.b"))
	require.NoError(t, err)
	assert.Equal(t, []TargetInfo{{Name: "iqn.a", Portals: []Portal{{"[2001:db8::1]:3260", 7}}}, {Name: "iqn.b"}}, got)

	for name, data := range map[string][]byte{
		"address first": textData("TargetAddress=10.0.0.1:3260,1"),
		"no tag":        textData("TargetName=iqn.a", "TargetAddress=10.0.0.1:3260"),
		"bad tag":       textData("TargetName=iqn.a", "TargetAddress=10.0.0.1:3260,x"),
		"tag too big":   textData("TargetName=iqn.a", "TargetAddress=10.0.0.1:3260,65536"),
		"malformed":     []byte("TargetName"),
	} {
		_, err := ParseSendTargets(data)
		assert.Error(t, err, name)
	}
}
