// Package naming derives every name mhcodi puts on a guest disk leg from the
// cluster, node, guest and disk names, and parses those names back.
//
// The functions are pure: the same inputs give the same names on every host,
// which is what lets a guest's hypervisor config name the same paths wherever
// it runs. Inputs are expected to be valid labels (see ValidLabel); the config
// loader checks that once, so callers here need not.
package naming

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"path"
	"regexp"
	"strings"
)

// MaxLabelLen is the longest node, guest, disk or cluster name. It keeps every
// derived name well inside the limits of LVM (127), IQNs (223) and sysfs.
const MaxLabelLen = 31

// MaxIQNLen is RFC 7143 §4.2.7.1's limit on an iSCSI name, in bytes.
const MaxIQNLen = 223

// LVPrefix starts every logical volume or file that holds a leg, so mhcodi's
// volumes are told apart from the others in a volume group at a glance.
const LVPrefix = "mhc-"

// DevDir is where every host links every leg of every guest.
const DevDir = "/dev/mhcodi"

// InitiatorSuffix ends a node's initiator IQN.
const InitiatorSuffix = "initiator"

// SerialLen is the length of a leg's unit serial: virtio-blk serials hold at
// most 20 bytes, and the same string is the SCSI VPD 0x80 serial.
const SerialLen = 20

// serialPrefix starts every serial so a human can tell mhcodi's disks apart.
const serialPrefix = "MHC"

var labelRE = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

// ValidLabel reports why s is not a usable node, guest, disk or cluster name,
// or nil if it is. The rule is a DNS label (RFC 1123) that starts with a
// letter, is lower case, at most MaxLabelLen bytes and does not end in '-'.
func ValidLabel(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > MaxLabelLen:
		return fmt.Errorf("%q is %d characters, the limit is %d", s, len(s), MaxLabelLen)
	case strings.ToLower(s) != s:
		return fmt.Errorf("%q has upper-case letters; names are lower-case DNS labels ([a-z][a-z0-9-]*)", s)
	case !labelRE.MatchString(s):
		return fmt.Errorf("%q is not a DNS label: it must start with a letter and hold only a-z, 0-9 and '-'", s)
	case strings.HasSuffix(s, "-"):
		return fmt.Errorf("%q ends with '-', which a DNS label may not", s)
	}
	return nil
}

// Leg identifies one leg of one guest disk: the copy kept on Node.
type Leg struct {
	Cluster string `json:"cluster"`
	Guest   string `json:"guest"`
	Disk    string `json:"disk"`
	Node    string `json:"node"`
}

func (l Leg) String() string { return l.Guest + "/" + l.Disk + "/" + l.Node }

// VolumeName is the logical volume (or file) name of a guest disk's leg. It
// is the same on both legs' nodes: mhc-<guest>-<disk>.
func VolumeName(guest, disk string) string { return LVPrefix + guest + "-" + disk }

// VolumeNameSplits returns every (guest, disk) pair whose VolumeName is name.
// A name can be ambiguous on its own ("mhc-a-b-c" is guest "a-b" disk "c" or
// guest "a" disk "b-c"); the config loader refuses clusters where two disks
// collide, so exactly one candidate is ever in a valid config.
func VolumeNameSplits(name string) [][2]string {
	rest, ok := strings.CutPrefix(name, LVPrefix)
	if !ok {
		return nil
	}
	var out [][2]string
	for i := 0; i < len(rest); i++ {
		if rest[i] != '-' {
			continue
		}
		g, d := rest[:i], rest[i+1:]
		if ValidLabel(g) == nil && ValidLabel(d) == nil {
			out = append(out, [2]string{g, d})
		}
	}
	return out
}

// iqnPrefixRE is RFC 7143 §4.2.7.2's "iqn." type designator, a yyyy-mm date
// and a reversed domain name, with no unique part (mhcodi appends its own).
var iqnPrefixRE = regexp.MustCompile(`^iqn\.[0-9]{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)

// ValidIQNPrefix reports why p cannot start mhcodi's IQNs, or nil.
func ValidIQNPrefix(p string) error {
	if p == "" {
		return errors.New("must not be empty")
	}
	if strings.ToLower(p) != p {
		return fmt.Errorf("%q has upper-case letters; iSCSI names are compared after lower-casing (RFC 3722), write it in lower case", p)
	}
	if !iqnPrefixRE.MatchString(p) {
		return fmt.Errorf("%q is not of the form iqn.yyyy-mm.reversed.domain (RFC 7143 §4.2.7.2), e.g. iqn.2026-11.org.example", p)
	}
	return nil
}

// iqnCharsOK reports whether s holds only the characters RFC 7143 §4.2.7.2
// (after RFC 3722 stringprep) lets mhcodi use: lower-case ASCII letters,
// digits, '-', '.' and ':'.
func iqnCharsOK(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// ValidIQN reports why s is not an iSCSI qualified name mhcodi can use.
func ValidIQN(s string) error {
	if len(s) > MaxIQNLen {
		return fmt.Errorf("IQN is %d bytes, RFC 7143 §4.2.7.1 allows %d: %q", len(s), MaxIQNLen, s)
	}
	if !strings.HasPrefix(s, "iqn.") {
		return fmt.Errorf("IQN %q does not start with \"iqn.\"", s)
	}
	if !iqnCharsOK(s) {
		return fmt.Errorf("IQN %q holds characters outside a-z, 0-9, '-', '.', ':'", s)
	}
	return nil
}

// TargetIQN is the iSCSI target name of a leg:
// <prefix>:<cluster>.<node>.<guest>.<disk>. Check it with ValidIQN when the
// inputs are not known to be short enough.
func TargetIQN(prefix string, l Leg) string {
	return prefix + ":" + l.Cluster + "." + l.Node + "." + l.Guest + "." + l.Disk
}

// InitiatorIQN is the iSCSI initiator name a node uses for every login:
// <prefix>:<cluster>.<node>.initiator.
func InitiatorIQN(prefix, cluster, node string) string {
	return prefix + ":" + cluster + "." + node + "." + InitiatorSuffix
}

// ParsedIQN is an IQN read back: a target (Guest and Disk set) or a node's
// initiator (Initiator true).
type ParsedIQN struct {
	Prefix    string
	Leg       Leg
	Initiator bool
}

// ParseIQN reads back a name made by TargetIQN or InitiatorIQN. Comparison is
// case-insensitive, as RFC 3722 lower-cases iSCSI names before comparing.
func ParseIQN(s string) (ParsedIQN, error) {
	if err := ValidIQN(strings.ToLower(s)); err != nil {
		return ParsedIQN{}, err
	}
	s = strings.ToLower(s)
	prefix, unique, ok := strings.Cut(s, ":")
	if !ok {
		return ParsedIQN{}, fmt.Errorf("IQN %q has no ':' before mhcodi's part", s)
	}
	if err := ValidIQNPrefix(prefix); err != nil {
		return ParsedIQN{}, fmt.Errorf("IQN prefix: %w", err)
	}
	parts := strings.Split(unique, ".")
	for i, p := range parts {
		if err := ValidLabel(p); err != nil {
			return ParsedIQN{}, fmt.Errorf("IQN %q part %d: %w", s, i+1, err)
		}
	}
	switch {
	case len(parts) == 3 && parts[2] == InitiatorSuffix:
		return ParsedIQN{Prefix: prefix, Initiator: true, Leg: Leg{Cluster: parts[0], Node: parts[1]}}, nil
	case len(parts) == 4:
		return ParsedIQN{Prefix: prefix, Leg: Leg{Cluster: parts[0], Node: parts[1], Guest: parts[2], Disk: parts[3]}}, nil
	}
	return ParsedIQN{}, fmt.Errorf("IQN %q is neither <cluster>.<node>.<guest>.<disk> nor <cluster>.<node>.initiator after the ':'", s)
}

// DevPath is the path of a leg on every host: /dev/mhcodi/<guest>/<disk>/<node>.
func DevPath(guest, disk, node string) string {
	return DevDir + "/" + guest + "/" + disk + "/" + node
}

// ParseDevPath reads back a path made by DevPath (cluster is not part of it).
func ParseDevPath(p string) (Leg, error) {
	rest, ok := strings.CutPrefix(p, DevDir+"/")
	if !ok || path.Clean(p) != p {
		return Leg{}, fmt.Errorf("%q is not a clean path under %s", p, DevDir)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return Leg{}, fmt.Errorf("%q is not %s/<guest>/<disk>/<node>", p, DevDir)
	}
	for i, what := range []string{"guest", "disk", "node"} {
		if err := ValidLabel(parts[i]); err != nil {
			return Leg{}, fmt.Errorf("%q: %s: %w", p, what, err)
		}
	}
	return Leg{Guest: parts[0], Disk: parts[1], Node: parts[2]}, nil
}

// legHash is the stable hash behind serials and WWNs. The purpose string
// keeps the two from sharing bits; NUL separators keep "a-b"/"c" and
// "a"/"b-c" apart (labels hold no NUL).
func legHash(purpose string, l Leg) [sha256.Size]byte {
	return sha256.Sum256([]byte("mhcodi\x00" + purpose + "\x00" + l.Cluster + "\x00" + l.Guest + "\x00" + l.Disk + "\x00" + l.Node))
}

// Serial is the leg's unit serial number (SCSI VPD 0x80 and virtio-blk
// serial): "MHC" and 17 upper-case hex digits of a hash of cluster, guest,
// disk and node; exactly SerialLen bytes. A guest finds its legs by it.
func Serial(l Leg) string {
	h := legHash("serial", l)
	return serialPrefix + strings.ToUpper(hex.EncodeToString(h[:]))[:SerialLen-len(serialPrefix)]
}

var serialRE = regexp.MustCompile(`^MHC[0-9A-F]{17}$`)

// ValidSerial reports whether s has the form Serial produces. A serial is a
// hash, so it is matched against the serials of known legs, not parsed.
func ValidSerial(s string) error {
	if !serialRE.MatchString(s) {
		return fmt.Errorf("serial %q is not \"MHC\" and 17 upper-case hex digits", s)
	}
	return nil
}

// WWN is the leg's 64-bit NAA identifier for SCSI VPD 0x83: NAA type 3
// ("locally assigned", SPC-4 §7.8.6.6.5), as mhcodi owns no IEEE OUI, with
// the other 60 bits from a hash of cluster, guest, disk and node.
func WWN(l Leg) uint64 {
	h := legHash("wwn", l)
	return 3<<60 | binary.BigEndian.Uint64(h[:8])&(1<<60-1)
}

// WWNBytes is WWN in the 8-byte big-endian form a designator carries.
func WWNBytes(l Leg) [8]byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], WWN(l))
	return b
}

// FormatWWN writes a WWN as Linux shows it in /dev/disk/by-id: "0x" and 16
// lower-case hex digits.
func FormatWWN(w uint64) string { return fmt.Sprintf("0x%016x", w) }

// ParseWWN reads a WWN written by FormatWWN (with or without "0x", any case,
// or with the "naa." prefix some tools use) and checks it is NAA type 3.
func ParseWWN(s string) (uint64, error) {
	t := strings.ToLower(s)
	t = strings.TrimPrefix(t, "naa.")
	t = strings.TrimPrefix(t, "0x")
	if len(t) != 16 {
		return 0, fmt.Errorf("WWN %q is not 16 hex digits", s)
	}
	b, err := hex.DecodeString(t)
	if err != nil {
		return 0, fmt.Errorf("WWN %q is not hex: %w", s, err)
	}
	w := binary.BigEndian.Uint64(b)
	if w>>60 != 3 {
		return 0, fmt.Errorf("WWN %q is NAA type %d, mhcodi's are type 3 (locally assigned)", s, w>>60)
	}
	return w, nil
}

// MAC is the Ethernet address of a guest's NIC: six bytes of a hash of
// cluster, guest and NIC name, with the locally administered bit set and
// the multicast bit clear. It is the same on every host, so a guest keeps
// its MAC (and with it its DHCP lease and its neighbours' ARP entries)
// across a failover.
func MAC(cluster, guest, nic string) net.HardwareAddr {
	h := sha256.Sum256([]byte("mhcodi\x00mac\x00" + cluster + "\x00" + guest + "\x00" + nic))
	m := net.HardwareAddr(h[:6:6])
	m[0] = m[0]&^0x01 | 0x02
	return m
}

// ValidMAC reports why s is not a unicast Ethernet address a guest's NIC
// may have ("52:54:00:12:34:56"), or nil. It returns the parsed address.
func ValidMAC(s string) (net.HardwareAddr, error) {
	m, err := net.ParseMAC(s)
	if err != nil || len(m) != 6 {
		return nil, fmt.Errorf("%q is not an Ethernet address (six hex bytes, e.g. 52:54:00:12:34:56)", s)
	}
	if m[0]&0x01 != 0 {
		return nil, fmt.Errorf("%q is a multicast address (the first byte is odd); a NIC needs a unicast one", s)
	}
	if m.String() == "00:00:00:00:00:00" {
		return nil, fmt.Errorf("%q is the zero address", s)
	}
	return m, nil
}

// ValidIfName reports why s cannot name a Linux network interface (a
// bridge or a tap), or nil: 1 to 15 bytes, no '/', ':' or white space, not
// "." or "..".
func ValidIfName(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case len(s) > 15:
		return fmt.Errorf("%q is %d bytes; Linux interface names have at most 15", s, len(s))
	case s == "." || s == "..":
		return fmt.Errorf("%q is not an interface name", s)
	case strings.ContainsAny(s, "/: \t\n\r\x00"):
		return fmt.Errorf("%q holds '/', ':' or white space, which interface names may not", s)
	}
	return nil
}

// TapName is the host's tap device of a guest's NIC: "mt" and 12 hex
// digits of a hash of guest and NIC name, 14 bytes whatever the names'
// lengths (Linux allows 15). The prefix marks mhcodi's taps.
func TapName(guest, nic string) string {
	h := sha256.Sum256([]byte("mhcodi\x00tap\x00" + guest + "\x00" + nic))
	return TapPrefix + hex.EncodeToString(h[:6])
}

// TapPrefix starts every tap device mhcodi makes.
const TapPrefix = "mt"
