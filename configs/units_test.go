package configs

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]Size{
		"10G": 10 * GiB, "512M": 512 * MiB, "256MiB": 256 * MiB, "256mb": 256 * MiB,
		"4096": 4096, "4096B": 4096, "1.5G": 1536 * MiB, " 2T ": 2 * TiB, "1k": KiB, "1P": PiB,
	} {
		got, err := ParseSize(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "G", "10X", "-1G", "1.1", "ten", "1e3G", "99999999999P", "1..5G", "10 G B"} {
		_, err := ParseSize(bad)
		assert.Error(t, err, bad)
	}
}

func TestSizeString(t *testing.T) {
	assert.Equal(t, "10G", (10 * GiB).String())
	assert.Equal(t, "1536M", (1536 * MiB).String())
	assert.Equal(t, "4097", Size(4097).String())
	assert.Equal(t, "0", Size(0).String())
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"10G", "1.5G", "4096", "256MiB", "", "1e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSize(s)
		if err != nil {
			return
		}
		back, err := ParseSize(v.String())
		if err != nil || back != v {
			t.Fatalf("ParseSize(%q) = %d, String %q parses as %d, %v", s, v, v.String(), back, err)
		}
	})
}

func TestParseAddress(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1": "192.0.2.1", "192.0.2.1:3261": "192.0.2.1:3261", "fd00::1": "fd00::1",
		"[fd00::1]:3260": "[fd00::1]:3260", "::ffff:192.0.2.1": "192.0.2.1",
	} {
		a, err := ParseAddress(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, a.String(), in)
	}
	for _, bad := range []string{"", "host.example", "192.0.2.1:0", "192.0.2.1:99999", "fe80::1%eth0", "[fe80::1%eth0]:3260", "192.0.2"} {
		_, err := ParseAddress(bad)
		assert.Error(t, err, bad)
	}
	a, _ := ParseAddress("192.0.2.1")
	assert.Equal(t, "192.0.2.1:3260", a.AddrPort(DefaultSANPort).String())
}
