package naming

import (
	"strings"
	"testing"
)

// FuzzParseIQN: no input panics, and whatever parses is rebuilt exactly (in
// lower case) by the function that makes it.
func FuzzParseIQN(f *testing.F) {
	for _, s := range []string{
		"iqn.2026-11.org.mhcodi:prod.node-b.web1.root",
		"iqn.2026-11.org.mhcodi:prod.node-a.initiator",
		"IQN.2026-11.ORG.MHCODI:PROD.NODE-A.INITIATOR",
		"iqn.2026-11.org.mhcodi:prod.a.b",
		"eui.02004567A425678D",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseIQN(s)
		if err != nil {
			return
		}
		var back string
		if p.Initiator {
			back = InitiatorIQN(p.Prefix, p.Leg.Cluster, p.Leg.Node)
		} else {
			back = TargetIQN(p.Prefix, p.Leg)
		}
		if back != strings.ToLower(s) {
			t.Fatalf("ParseIQN(%q) = %+v, rebuilt as %q", s, p, back)
		}
		if err := ValidIQN(back); err != nil {
			t.Fatalf("parsed IQN %q is not valid: %v", back, err)
		}
	})
}

// FuzzParseDevPath: no panic; parsed paths rebuild exactly.
func FuzzParseDevPath(f *testing.F) {
	for _, s := range []string{"/dev/mhcodi/web1/root/node-b", "/dev/mhcodi/a/b", "/dev/mhcodi/../../etc/passwd/x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseDevPath(s)
		if err != nil {
			return
		}
		if back := DevPath(l.Guest, l.Disk, l.Node); back != s {
			t.Fatalf("ParseDevPath(%q) = %+v, rebuilt as %q", s, l, back)
		}
	})
}

// FuzzVolumeNameSplits: every candidate rebuilds the name and is valid.
func FuzzVolumeNameSplits(f *testing.F) {
	for _, s := range []string{"mhc-web1-root", "mhc-a-b-c", "mhc--", "lv0", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, c := range VolumeNameSplits(s) {
			if ValidLabel(c[0]) != nil || ValidLabel(c[1]) != nil {
				t.Fatalf("VolumeNameSplits(%q) gave invalid labels %q", s, c)
			}
			if back := VolumeName(c[0], c[1]); back != s {
				t.Fatalf("VolumeNameSplits(%q) candidate %q rebuilds as %q", s, c, back)
			}
		}
	})
}

// FuzzParseWWN: no panic; parsed WWNs format back to the canonical form of
// the input and are NAA type 3.
func FuzzParseWWN(f *testing.F) {
	for _, s := range []string{"0x38a2973acee43787", "naa.38A2973ACEE43787", "0x6001405abcdef012", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseWWN(s)
		if err != nil {
			return
		}
		if w>>60 != 3 {
			t.Fatalf("ParseWWN(%q) accepted NAA type %d", s, w>>60)
		}
		canon := strings.TrimPrefix(strings.TrimPrefix(strings.ToLower(s), "naa."), "0x")
		if FormatWWN(w) != "0x"+canon {
			t.Fatalf("ParseWWN(%q) = %x, formats as %s", s, w, FormatWWN(w))
		}
	})
}

// FuzzLegNames: for any valid labels, every derived name parses back to them.
func FuzzLegNames(f *testing.F) {
	f.Add("prod", "web1", "root", "node-b")
	f.Add("a", "a-b", "c", "n")
	f.Fuzz(func(t *testing.T, cluster, guest, disk, node string) {
		for _, s := range []string{cluster, guest, disk, node} {
			if ValidLabel(s) != nil {
				return
			}
		}
		l := Leg{Cluster: cluster, Guest: guest, Disk: disk, Node: node}
		p, err := ParseIQN(TargetIQN("iqn.2026-11.org.mhcodi", l))
		if err != nil || p.Leg != l || p.Initiator {
			t.Fatalf("target IQN of %+v: %+v, %v", l, p, err)
		}
		dl, err := ParseDevPath(DevPath(guest, disk, node))
		if err != nil || dl != (Leg{Guest: guest, Disk: disk, Node: node}) {
			t.Fatalf("dev path of %+v: %+v, %v", l, dl, err)
		}
		found := false
		for _, c := range VolumeNameSplits(VolumeName(guest, disk)) {
			found = found || c == [2]string{guest, disk}
		}
		if !found {
			t.Fatalf("VolumeNameSplits(%q) misses %s/%s", VolumeName(guest, disk), guest, disk)
		}
		if ValidSerial(Serial(l)) != nil {
			t.Fatalf("serial of %+v invalid: %q", l, Serial(l))
		}
		if _, err := ParseWWN(FormatWWN(WWN(l))); err != nil {
			t.Fatalf("WWN of %+v: %v", l, err)
		}
	})
}

// FuzzMAC: whatever the names, the MAC is six bytes, unicast and locally
// administered, and ValidMAC accepts it.
func FuzzMAC(f *testing.F) {
	for _, s := range [][3]string{{"prod", "web1", "svc"}, {"", "", ""}, {"a", "b", "c\x00"}} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, cluster, guest, nic string) {
		m := MAC(cluster, guest, nic)
		if len(m) != 6 || m[0]&0x01 != 0 || m[0]&0x02 == 0 {
			t.Fatalf("MAC(%q, %q, %q) = %s: not locally administered unicast", cluster, guest, nic, m)
		}
		if _, err := ValidMAC(m.String()); err != nil {
			t.Fatalf("MAC(%q, %q, %q) = %s: %v", cluster, guest, nic, m, err)
		}
	})
}
