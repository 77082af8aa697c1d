// Package text is the iSCSI text and login codec both the target and the
// initiator use (RFC 7143 §6, §11.12-13, §12.1.3, §13): key=value text data
// segments, the key names and their value limits, numerical, boolean and
// binary values, Login Response status codes, login stages and the CHAP
// (RFC 1994) response. It keeps no state and does no I/O; the target's
// login state machine is targetd/login, the initiator's is in
// initiator/iscsiclient.
package text

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// KV is one key=value pair of a text data segment.
type KV struct{ Key, Value string }

// Length limits of RFC 7143 §6.1.
const (
	// MaxKeyLen is the longest key name.
	MaxKeyLen = 63
	// MaxSimpleValue is the longest simple-value "if not otherwise
	// specified" (not counting the delimiter).
	MaxSimpleValue = 255
	// MaxNameLen is the longest iSCSI name (§4.2.7.1).
	MaxNameLen = 223
	// MaxBinaryLen is the longest decoded CHAP_C / CHAP_R (§12.1.3).
	MaxBinaryLen = 1024
	// maxBinaryText is the longest encoded binary value we accept: "0x"
	// plus two hex digits per byte (base64 is shorter).
	maxBinaryText = 2 + 2*MaxBinaryLen
	// maxListValue bounds list-of-values keys (AuthMethod, digests...):
	// each element is a simple-value, the list itself has no RFC limit, so
	// this only stops absurd input.
	maxListValue = 1024
	// maxUnknownValue bounds values of keys we do not know (X- extension
	// keys): we only answer NotUnderstood, but still refuse unbounded data.
	maxUnknownValue = 8192
)

// Reserved values that are answers, never offers (§6.2).
const (
	ValueReject        = "Reject"
	ValueIrrelevant    = "Irrelevant"
	ValueNotUnderstood = "NotUnderstood"
)

// ParseText parses a text data segment (Login or Text Request): key=value
// pairs, each followed by one NUL (§6.1). It is strict: every pair needs an
// '=', key names must be well formed, values must be UTF-8 within the length
// limits of their key, and a key may appear only once. Extra NULs after the
// last pair (padding counted in the segment length by some initiators) are
// tolerated; empty pairs elsewhere are not.
func ParseText(data []byte) ([]KV, error) {
	return parseText(data, false)
}

// ParseTextRepeats is ParseText allowing repeated keys (SendTargets
// responses repeat TargetName and TargetAddress).
func ParseTextRepeats(data []byte) ([]KV, error) {
	return parseText(data, true)
}

// parseText is ParseText, optionally allowing repeated keys (SendTargets
// responses repeat TargetName and TargetAddress).
func parseText(data []byte, allowRepeats bool) ([]KV, error) {
	if len(data) == 0 {
		return nil, nil
	}
	if data[len(data)-1] != 0 {
		return nil, errors.New("text data does not end with a NUL")
	}
	end := len(data)
	for end > 0 && data[end-1] == 0 {
		end--
	}
	if end == 0 {
		return nil, errors.New("text data holds only NULs, no key=value pair")
	}
	var kvs []KV
	var seen map[string]bool
	if !allowRepeats {
		seen = map[string]bool{}
	}
	off := 0
	for _, pair := range bytes.Split(data[:end], []byte{0}) {
		kv, err := parsePair(pair)
		if err != nil {
			return nil, fmt.Errorf("text pair %d at byte %d: %w", len(kvs)+1, off, err)
		}
		if seen != nil {
			if seen[kv.Key] {
				return nil, fmt.Errorf("text pair %d at byte %d: key %q appears twice", len(kvs)+1, off, kv.Key)
			}
			seen[kv.Key] = true
		}
		kvs = append(kvs, kv)
		off += len(pair) + 1
	}
	return kvs, nil
}

func parsePair(pair []byte) (KV, error) {
	if len(pair) == 0 {
		return KV{}, errors.New("empty key=value pair")
	}
	i := bytes.IndexByte(pair, '=')
	if i < 0 {
		return KV{}, fmt.Errorf("%q has no '='", Truncate(string(pair)))
	}
	kv := KV{Key: string(pair[:i]), Value: string(pair[i+1:])}
	if err := validKey(kv.Key); err != nil {
		return KV{}, err
	}
	if err := validValue(kv.Key, kv.Value); err != nil {
		return KV{}, err
	}
	return kv, nil
}

// validKey checks the key-name syntax of §6.1: letters, digits and
// ". - + @ _", at most 63 bytes, starting with a letter; "X#" starts the
// IANA-registered extension keys, the only place '#' may appear.
func validKey(k string) error {
	if k == "" {
		return errors.New("empty key name")
	}
	if len(k) > MaxKeyLen {
		return fmt.Errorf("key name %q is longer than %d bytes", Truncate(k), MaxKeyLen)
	}
	if !isLetter(k[0]) {
		return fmt.Errorf("key name %q does not start with a letter", k)
	}
	for i := 1; i < len(k); i++ {
		c := k[i]
		switch {
		case isLetter(c), c >= '0' && c <= '9', c == '.', c == '-', c == '+', c == '@', c == '_':
		case c == '#' && i == 1 && k[0] == 'X':
		default:
			return fmt.Errorf("key name %q has the invalid character %q", k, c)
		}
	}
	return nil
}

func isLetter(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }

// validValue checks a value's encoding and length for its key.
func validValue(key, v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("value of %s is not UTF-8", key)
	}
	limit, known := valueLimit(key)
	if len(v) > limit {
		return fmt.Errorf("value of %s is %d bytes, more than the %d allowed", key, len(v), limit)
	}
	if !known {
		// Unknown keys: every element of what may be a list is still a
		// simple-value.
		for _, e := range strings.Split(v, ",") {
			if len(e) > MaxSimpleValue {
				return fmt.Errorf("value of %s has a %d-byte element, more than the %d allowed", key, len(e), MaxSimpleValue)
			}
		}
	}
	return nil
}

// EncodeText encodes pairs as a text data segment: key=value, each followed
// by a NUL. It does not validate; keys and values must not contain NUL.
func EncodeText(kvs []KV) []byte {
	n := 0
	for _, kv := range kvs {
		n += len(kv.Key) + len(kv.Value) + 2
	}
	if n == 0 {
		return nil
	}
	out := make([]byte, 0, n)
	for _, kv := range kvs {
		out = append(out, kv.Key...)
		out = append(out, '=')
		out = append(out, kv.Value...)
		out = append(out, 0)
	}
	return out
}

// Lookup returns the value of key in kvs.
func Lookup(kvs []KV, key string) (string, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}

// SplitData cuts a text data segment into pieces of at most max bytes, for
// responses sent over several PDUs with the C bit. A key=value pair may
// straddle two pieces (§6.1 allows it). It always returns at least one
// piece, possibly empty; max below 1 is treated as 1.
func SplitData(data []byte, max int) [][]byte {
	if max < 1 {
		max = 1
	}
	if len(data) <= max {
		return [][]byte{data}
	}
	var out [][]byte
	for len(data) > max {
		out = append(out, data[:max:max])
		data = data[max:]
	}
	return append(out, data)
}

// ParseNumber parses a numerical-value: a decimal-constant, or a
// regular-binary-value (0x hex or 0b base64) of at most 64 bits (§6.1).
func ParseNumber(s string) (uint64, error) {
	if len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X' || s[1] == 'b' || s[1] == 'B') {
		b, err := DecodeBinary(s)
		if err != nil {
			return 0, err
		}
		if len(b) > 8 {
			return 0, fmt.Errorf("number %q is wider than 64 bits", Truncate(s))
		}
		var buf [8]byte
		copy(buf[8-len(b):], b)
		return binary.BigEndian.Uint64(buf[:]), nil
	}
	if s == "" {
		return 0, errors.New("empty number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", Truncate(s))
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("number %q: %w", Truncate(s), err)
	}
	return v, nil
}

// ParseBool parses a boolean-value: exactly "Yes" or "No".
func ParseBool(s string) (bool, error) {
	switch s {
	case "Yes":
		return true, nil
	case "No":
		return false, nil
	}
	return false, fmt.Errorf("%q is not Yes or No", Truncate(s))
}

func FormatBool(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

// DecodeBinary decodes a hex-constant ("0x"/"0X", an odd digit count
// meaning a leading zero nibble) or a base64-constant ("0b"/"0B", padding
// optional) (§6.1).
func DecodeBinary(s string) ([]byte, error) {
	if len(s) < 3 || s[0] != '0' {
		return nil, fmt.Errorf("%q is neither a 0x hex nor a 0b base64 constant", Truncate(s))
	}
	body := s[2:]
	switch s[1] {
	case 'x', 'X':
		if len(body)%2 == 1 {
			body = "0" + body
		}
		b, err := hex.DecodeString(body)
		if err != nil {
			return nil, fmt.Errorf("bad hex constant %q: %w", Truncate(s), err)
		}
		return b, nil
	case 'b', 'B':
		enc := base64.StdEncoding
		if !strings.HasSuffix(body, "=") && len(body)%4 != 0 {
			enc = base64.RawStdEncoding
		}
		b, err := enc.Strict().DecodeString(body)
		if err != nil {
			return nil, fmt.Errorf("bad base64 constant %q: %w", Truncate(s), err)
		}
		if len(b) == 0 {
			return nil, fmt.Errorf("empty base64 constant %q", Truncate(s))
		}
		return b, nil
	}
	return nil, fmt.Errorf("%q is neither a 0x hex nor a 0b base64 constant", Truncate(s))
}

// EncodeHex encodes binary data as a hex-constant, the form every
// initiator parses (libiscsi only understands 0x).
func EncodeHex(b []byte) string { return "0x" + hex.EncodeToString(b) }

// Truncate shortens untrusted text quoted in error messages.
func Truncate(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
