package naming

import (
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var web1 = Leg{Cluster: "prod", Guest: "web1", Disk: "root", Node: "node-b"}

func TestValidLabel(t *testing.T) {
	for _, ok := range []string{"a", "node-a", "web1", "x-1-2", strings.Repeat("a", MaxLabelLen)} {
		assert.NoError(t, ValidLabel(ok), ok)
	}
	for bad, why := range map[string]string{
		"":                                 "empty",
		"Node-a":                           "upper-case",
		"1node":                            "start with a letter",
		"node_a":                           "DNS label",
		"node.a":                           "DNS label",
		"node-":                            "ends with '-'",
		strings.Repeat("a", MaxLabelLen+1): "limit is 31",
		"nöde":                             "DNS label",
	} {
		err := ValidLabel(bad)
		if assert.Error(t, err, bad) {
			assert.Contains(t, err.Error(), why, bad)
		}
	}
}

func TestTableNames(t *testing.T) {
	// DESIGN.md's names table, example for example.
	assert.Equal(t, "mhc-web1-root", VolumeName("web1", "root"))
	assert.Equal(t, "iqn.2026-11.org.mhcodi:prod.node-b.web1.root", TargetIQN("iqn.2026-11.org.mhcodi", web1))
	assert.Equal(t, "iqn.2026-11.org.mhcodi:prod.node-a.initiator", InitiatorIQN("iqn.2026-11.org.mhcodi", "prod", "node-a"))
	assert.Equal(t, "/dev/mhcodi/web1/root/node-b", DevPath("web1", "root", "node-b"))
}

func TestParseIQNRoundTrip(t *testing.T) {
	p := "iqn.2026-11.org.mhcodi"
	got, err := ParseIQN(TargetIQN(p, web1))
	require.NoError(t, err)
	assert.Equal(t, ParsedIQN{Prefix: p, Leg: web1}, got)

	got, err = ParseIQN(InitiatorIQN(p, "prod", "node-a"))
	require.NoError(t, err)
	assert.Equal(t, ParsedIQN{Prefix: p, Initiator: true, Leg: Leg{Cluster: "prod", Node: "node-a"}}, got)

	// RFC 3722: names compare after lower-casing.
	got, err = ParseIQN("IQN.2026-11.ORG.MHCODI:PROD.NODE-B.WEB1.ROOT")
	require.NoError(t, err)
	assert.Equal(t, web1, got.Leg)
}

func TestParseIQNRejects(t *testing.T) {
	for _, bad := range []string{
		"",
		"eui.02004567A425678D",
		"iqn.2026-11.org.mhcodi",              // no unique part
		"iqn.2026-13.org.mhcodi:prod.a.b.c",   // month 13
		"iqn.2026-11.org.mhcodi:prod.a.b",     // three parts, not an initiator
		"iqn.2026-11.org.mhcodi:prod.a.b.c.d", // five parts
		"iqn.2026-11.org.mhcodi:prod.a.b_c.d", // bad character
		"iqn.2026-11.org.mhcodi:prod..b.c",    // empty label
		"iqn.2026-11.org.mhcodi:prod.a.b:c.d", // second ':'
		"iqn.2026-11.org.mhcodi:" + strings.Repeat("a", 200) + ".b.c.d", // > 223 bytes
	} {
		_, err := ParseIQN(bad)
		assert.Error(t, err, bad)
	}
}

func TestIQNLengthLimit(t *testing.T) {
	long := strings.Repeat("a", MaxLabelLen)
	l := Leg{Cluster: long, Guest: long, Disk: long, Node: long}
	prefix := "iqn.2026-11.org.mhcodi"
	iqn := TargetIQN(prefix, l)
	assert.LessOrEqual(t, len(iqn), MaxIQNLen, "four maximal labels and a short prefix must fit")
	require.NoError(t, ValidIQN(iqn))
	longPrefix := "iqn.2026-11." + strings.Repeat("x", 100) + ".org"
	require.NoError(t, ValidIQNPrefix(longPrefix))
	assert.ErrorContains(t, ValidIQN(TargetIQN(longPrefix, l)), "allows 223")
}

func TestValidIQNPrefix(t *testing.T) {
	for _, ok := range []string{"iqn.2026-11.org.mhcodi", "iqn.2001-04.com.example", "iqn.1999-12.a"} {
		assert.NoError(t, ValidIQNPrefix(ok), ok)
	}
	for _, bad := range []string{"", "iqn.2026-11.org.mhcodi:", "iqn.26-11.org", "IQN.2026-11.org.x", "iqn.2026-11.-org", "iqn.2026-11.org.", "iqn.2026-00.org", "naa.52004567BA64678D"} {
		assert.Error(t, ValidIQNPrefix(bad), bad)
	}
}

func TestDevPathRoundTrip(t *testing.T) {
	l, err := ParseDevPath(DevPath("web1", "root", "node-b"))
	require.NoError(t, err)
	assert.Equal(t, Leg{Guest: "web1", Disk: "root", Node: "node-b"}, l)
	for _, bad := range []string{"/dev/mhcodi/web1/root", "/dev/mhcodi/web1/root/node-b/x", "/dev/sda", "/dev/mhcodi/../x/y/z", "/dev/mhcodi/web1//node-b", "/dev/mhcodi/Web1/root/node-b"} {
		_, err := ParseDevPath(bad)
		assert.Error(t, err, bad)
	}
}

func TestVolumeNameSplits(t *testing.T) {
	assert.Equal(t, [][2]string{{"web1", "root"}}, VolumeNameSplits("mhc-web1-root"))
	// Ambiguous on its own: both readings come back, the config tells them apart.
	assert.Equal(t, [][2]string{{"a", "b-c"}, {"a-b", "c"}}, VolumeNameSplits("mhc-a-b-c"))
	assert.Empty(t, VolumeNameSplits("lv-root"))
	assert.Empty(t, VolumeNameSplits("mhc-web1"))
	assert.Empty(t, VolumeNameSplits("mhc--root"))
}

func TestSerial(t *testing.T) {
	s := Serial(web1)
	assert.Len(t, s, SerialLen)
	assert.NoError(t, ValidSerial(s))
	assert.Equal(t, s, Serial(web1), "stable")
	// Golden value: changing the hash would rename every disk in the field.
	assert.Equal(t, "MHC", s[:3])
	assert.Equal(t, goldenSerial, s)
	seen := map[string]Leg{}
	for _, l := range []Leg{
		web1,
		{Cluster: "prod", Guest: "web1", Disk: "root", Node: "node-a"},
		{Cluster: "prod", Guest: "web1", Disk: "data", Node: "node-b"},
		{Cluster: "prod", Guest: "web2", Disk: "root", Node: "node-b"},
		{Cluster: "test", Guest: "web1", Disk: "root", Node: "node-b"},
		{Cluster: "prod", Guest: "a-b", Disk: "c", Node: "n"},
		{Cluster: "prod", Guest: "a", Disk: "b-c", Node: "n"},
	} {
		s := Serial(l)
		_, dup := seen[s]
		assert.False(t, dup, "serial %s of %v collides", s, l)
		seen[s] = l
	}
	assert.Error(t, ValidSerial("MHC123"))
	assert.Error(t, ValidSerial(strings.ToLower(s)))
}

const (
	goldenSerial = "MHC6385B57FD021C0FAC"
	goldenWWN    = "0x38a2973acee43787"
)

func TestWWN(t *testing.T) {
	w := WWN(web1)
	assert.Equal(t, uint64(3), w>>60, "NAA type 3")
	assert.Equal(t, goldenWWN, FormatWWN(w))
	b := WWNBytes(web1)
	assert.Equal(t, byte(0x30), b[0]&0xf0)
	back, err := ParseWWN(FormatWWN(w))
	require.NoError(t, err)
	assert.Equal(t, w, back)
	back, err = ParseWWN("naa." + strings.ToUpper(FormatWWN(w)[2:]))
	require.NoError(t, err)
	assert.Equal(t, w, back)
	assert.NotEqual(t, WWN(web1), WWN(Leg{Cluster: "prod", Guest: "web1", Disk: "root", Node: "node-a"}))
	for _, bad := range []string{"", "0x123", "0x6001405abcdef012", "0xzz01405abcdef012"} {
		_, err := ParseWWN(bad)
		assert.Error(t, err, bad)
	}
}

func TestMAC(t *testing.T) {
	m := MAC("prod", "web1", "svc")
	if m.String() != MAC("prod", "web1", "svc").String() {
		t.Fatal("MAC is not stable")
	}
	if len(m) != 6 || m[0]&0x02 == 0 || m[0]&0x01 != 0 {
		t.Fatalf("MAC %s is not locally administered unicast", m)
	}
	for _, other := range []net.HardwareAddr{MAC("prod", "web1", "svc2"), MAC("prod", "web2", "svc"), MAC("test", "web1", "svc"), MAC("prod", "web1s", "vc")} {
		if other.String() == m.String() {
			t.Fatalf("MAC %s repeats for other names", m)
		}
	}
	if _, err := ValidMAC(m.String()); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"01:00:5e:00:00:01", "00:00:00:00:00:00", "52:54:00:12:34", "zz:54:00:12:34:56", "52:54:00:12:34:56:78:9a"} {
		if _, err := ValidMAC(bad); err == nil {
			t.Errorf("ValidMAC(%q) = nil", bad)
		}
	}
}

func TestTapName(t *testing.T) {
	n := TapName("a-very-long-guest-name-of-31-ch", "a-very-long-nic-name-too")
	if err := ValidIfName(n); err != nil || !strings.HasPrefix(n, TapPrefix) {
		t.Fatalf("TapName = %q: %v", n, err)
	}
	if TapName("web1", "svc") == TapName("web1", "svc2") {
		t.Fatal("two NICs share a tap name")
	}
	for _, bad := range []string{"", "a-name-of-16-byt", "br/0", "br:0", "br 0", "."} {
		if ValidIfName(bad) == nil {
			t.Errorf("ValidIfName(%q) = nil", bad)
		}
	}
}
