package text

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// text builds a text data segment from "key=value" strings.
func text(pairs ...string) []byte {
	var b []byte
	for _, p := range pairs {
		b = append(b, p...)
		b = append(b, 0)
	}
	return b
}

func TestParseText(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name    string
		data    []byte
		want    []KV
		wantErr string
	}{
		{name: "empty", data: nil, want: nil},
		{name: "one pair", data: text("HeaderDigest=None"), want: []KV{{"HeaderDigest", "None"}}},
		{name: "several pairs keep order", data: text("B=1", "A=2"), want: []KV{{"B", "1"}, {"A", "2"}}},
		{name: "empty value", data: text("SendTargets="), want: []KV{{"SendTargets", ""}}},
		{name: "value with '='", data: text("X-a.b=c=d"), want: []KV{{"X-a.b", "c=d"}}},
		{name: "trailing padding NULs", data: append(text("A=1"), 0, 0, 0), want: []KV{{"A", "1"}}},
		{name: "X# extension key", data: text("X#com.example=1"), want: []KV{{"X#com.example", "1"}}},
		{name: "lower-case first letter", data: text("iSCSIProtocolLevel=1"), want: []KV{{"iSCSIProtocolLevel", "1"}}},
		{name: "UTF-8 alias", data: text("InitiatorAlias=nœud-α"), want: []KV{{"InitiatorAlias", "nœud-α"}}},
		{name: "63-byte key", data: text("K" + long(62) + "=1"), want: []KV{{"K" + long(62), "1"}}},
		{name: "CHAP_C of 1024 bytes", data: text("CHAP_C=0x" + strings.Repeat("ab", 1024)), want: []KV{{"CHAP_C", "0x" + strings.Repeat("ab", 1024)}}},

		{name: "no final NUL", data: []byte("A=1"), wantErr: "does not end with a NUL"},
		{name: "only NULs", data: []byte{0, 0}, wantErr: "only NULs"},
		{name: "missing '='", data: text("HeaderDigest"), wantErr: "has no '='"},
		{name: "empty pair in the middle", data: []byte("A=1\x00\x00B=2\x00"), wantErr: "empty key=value pair"},
		{name: "empty key", data: text("=1"), wantErr: "empty key name"},
		{name: "64-byte key", data: text("K" + long(63) + "=1"), wantErr: "longer than 63"},
		{name: "key starts with digit", data: text("1A=1"), wantErr: "does not start with a letter"},
		{name: "key with space", data: text("A B=1"), wantErr: "invalid character"},
		{name: "'#' not after X", data: text("A#b=1"), wantErr: "invalid character"},
		{name: "duplicate key", data: text("A=1", "A=1"), wantErr: "appears twice"},
		{name: "value not UTF-8", data: text("InitiatorAlias=\xff"), wantErr: "not UTF-8"},
		{name: "simple value too long", data: text("MaxBurstLength=" + long(256)), wantErr: "more than the 255 allowed"},
		{name: "name too long", data: text("TargetName=iqn." + long(220)), wantErr: "more than the 223 allowed"},
		{name: "CHAP_R too long", data: text("CHAP_R=0x" + strings.Repeat("ab", 1025)), wantErr: "more than the 2050 allowed"},
		{name: "unknown key element too long", data: text("X-a=" + long(256)), wantErr: "256-byte element"},
		{name: "unknown key value too long", data: text("X-a=" + strings.Repeat("a,", 4097)), wantErr: "more than the 8192 allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseText(tc.data)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestEncodeTextRoundTrip(t *testing.T) {
	kvs := []KV{{"InitiatorName", "iqn.2004-10.com.ubuntu:01:abc"}, {"SendTargets", ""}, {"X-a.b", "x=y"}}
	data := EncodeText(kvs)
	assert.Equal(t, text("InitiatorName=iqn.2004-10.com.ubuntu:01:abc", "SendTargets=", "X-a.b=x=y"), data)
	got, err := ParseText(data)
	require.NoError(t, err)
	assert.Equal(t, kvs, got)
	assert.Empty(t, EncodeText(nil))
}

func TestLookup(t *testing.T) {
	kvs := []KV{{"A", "1"}, {"B", ""}}
	v, ok := Lookup(kvs, "B")
	assert.True(t, ok)
	assert.Equal(t, "", v)
	_, ok = Lookup(kvs, "C")
	assert.False(t, ok)
}

func TestSplitData(t *testing.T) {
	assert.Equal(t, [][]byte{nil}, SplitData(nil, 10))
	assert.Equal(t, [][]byte{[]byte("abc")}, SplitData([]byte("abc"), 3))
	assert.Equal(t, [][]byte{[]byte("ab"), []byte("cd"), []byte("e")}, SplitData([]byte("abcde"), 2))
	assert.Len(t, SplitData([]byte("abc"), 0), 3, "a max below 1 is treated as 1")
	// Appending to a piece must not overwrite the next one.
	p := SplitData([]byte("abcd"), 2)
	_ = append(p[0], 'X')
	assert.Equal(t, []byte("cd"), p[1])
}

func TestParseNumber(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true},
		{"8192", 8192, true},
		{"18446744073709551615", 1<<64 - 1, true},
		{"18446744073709551616", 0, false},
		{"0x2000", 8192, true},
		{"0X2000", 8192, true},
		{"0x", 0, false},
		{"0bIAA=", 8192, true},
		{"0x10000000000000000", 0, false},
		{"", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1e3", 0, false},
		{" 1", 0, false},
	}
	for _, tc := range tests {
		got, err := ParseNumber(tc.in)
		if !tc.ok {
			assert.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
}

func TestDecodeBinary(t *testing.T) {
	tests := []struct {
		in   string
		want []byte
		ok   bool
	}{
		{"0x00ff", []byte{0, 0xff}, true},
		{"0XABcd", []byte{0xab, 0xcd}, true},
		{"0xf", []byte{0x0f}, true},
		{"0b3q8=", []byte{0xde, 0xaf}, true},
		{"0B3q8", []byte{0xde, 0xaf}, true},
		{"0x0g", nil, false},
		{"0b***", nil, false},
		{"ff", nil, false},
		{"0z12", nil, false},
		{"0x", nil, false},
	}
	for _, tc := range tests {
		got, err := DecodeBinary(tc.in)
		if !tc.ok {
			assert.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
	assert.Equal(t, "0x00ff10", EncodeHex([]byte{0, 0xff, 0x10}))
}

func FuzzParseText(f *testing.F) {
	f.Add(text("InitiatorName=iqn.2004-10.com.ubuntu:01:abc", "SessionType=Normal"))
	f.Add(text("CHAP_C=0xabcdef", "CHAP_I=7"))
	f.Add([]byte("A=1\x00\x00"))
	f.Add([]byte("no-equals"))
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, data []byte) {
		kvs, err := ParseText(data)
		if err != nil {
			return
		}
		// Whatever parses re-encodes to the same bytes, minus trailing
		// padding, and parses back to the same pairs.
		enc := EncodeText(kvs)
		if !bytes.HasPrefix(data, enc) || len(bytes.Trim(data[len(enc):], "\x00")) != 0 {
			t.Fatalf("re-encoding %q gave %q", data, enc)
		}
		again, err := ParseText(enc)
		if err != nil {
			t.Fatalf("re-parsing %q: %v", enc, err)
		}
		if len(again) != len(kvs) {
			t.Fatalf("re-parsing changed the pair count: %v vs %v", again, kvs)
		}
		for i := range kvs {
			if kvs[i] != again[i] {
				t.Fatalf("pair %d changed: %v vs %v", i, kvs[i], again[i])
			}
		}
	})
}
