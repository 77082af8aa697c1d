package configs

import (
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
)

// Size is a number of bytes, written in the file as "10G", "512M", "256MiB"
// or a plain number of bytes. Units are binary: 1K = 1024 bytes.
type Size uint64

// Binary size units.
const (
	KiB Size = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
	PiB
)

var sizeUnits = map[string]Size{"": 1, "b": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB, "p": PiB}

// ParseSize reads "10G", "512M", "1.5G", "256MiB", "4096" (bytes). A fraction
// must come out as a whole number of bytes.
func ParseSize(s string) (Size, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') && t[i-1] != '.' {
		i--
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	// "M", "MB" and "MiB" all mean MiB; "B" or nothing means bytes.
	if u, ok := strings.CutSuffix(unit, "ib"); ok && u != "" {
		unit = u
	} else if u, ok := strings.CutSuffix(unit, "b"); ok && u != "" {
		unit = u
	}
	mult, ok := sizeUnits[unit]
	if !ok || num == "" {
		return 0, fmt.Errorf("%q is not a size: write a number with an optional unit K, M, G, T or P (binary, e.g. 10G, 512M)", s)
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a size: %v", s, errNumMsg(err))
		}
		hi, lo := bits.Mul64(n, uint64(mult))
		if hi != 0 {
			return 0, fmt.Errorf("%q is too large", s)
		}
		return Size(lo), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size: %v", s, errNumMsg(err))
	}
	b := f * float64(mult)
	if b >= math.MaxUint64 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	if b != math.Trunc(b) {
		return 0, fmt.Errorf("%q is not a whole number of bytes", s)
	}
	return Size(b), nil
}

func errNumMsg(err error) string {
	if ne, ok := err.(*strconv.NumError); ok {
		return ne.Err.Error()
	}
	return err.Error()
}

// UnmarshalText lets the decoder read sizes from strings.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText writes the size the way String does.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// String writes the size in the largest binary unit that divides it exactly,
// so "10G" comes back as "10G" and 1.5 GiB as "1536M".
func (s Size) String() string {
	for _, u := range []struct {
		n string
		v Size
	}{{"P", PiB}, {"T", TiB}, {"G", GiB}, {"M", MiB}, {"K", KiB}} {
		if s >= u.v && s%u.v == 0 {
			return strconv.FormatUint(uint64(s/u.v), 10) + u.n
		}
	}
	return strconv.FormatUint(uint64(s), 10)
}

// ParseAddress reads "192.0.2.1", "192.0.2.1:3260", "fd00::1" or
// "[fd00::1]:3260". Host names are refused.
func ParseAddress(s string) (Address, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return Address{}, fmt.Errorf("empty address")
	}
	if ip, err := netip.ParseAddr(t); err == nil {
		if ip.Zone() != "" {
			return Address{}, fmt.Errorf("%q has an IPv6 zone; use a global or unique-local address", s)
		}
		return Address{IP: ip.Unmap()}, nil
	}
	ap, err := netip.ParseAddrPort(t)
	if err != nil {
		return Address{}, fmt.Errorf("%q is not an IP address or IP:port (host names are not allowed, so failover never waits on DNS)", s)
	}
	if ap.Port() == 0 {
		return Address{}, fmt.Errorf("%q has port 0", s)
	}
	if ap.Addr().Zone() != "" {
		return Address{}, fmt.Errorf("%q has an IPv6 zone; use a global or unique-local address", s)
	}
	return Address{IP: ap.Addr().Unmap(), Port: ap.Port()}, nil
}

// UnmarshalText lets the decoder read addresses from strings.
func (a *Address) UnmarshalText(b []byte) error {
	v, err := ParseAddress(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// MarshalText writes the address as it was written (port only if given).
func (a Address) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

func (a Address) String() string {
	switch {
	case !a.IP.IsValid():
		return ""
	case a.Port == 0:
		return a.IP.String()
	}
	return netip.AddrPortFrom(a.IP, a.Port).String()
}
