package login

import (
	"testing"

	"github.com/mhcodi/mhcodi/iscsi/text"
)

// fuzzRequest turns a flags byte and data into a request: bit 7 T, bit 6
// C, bits 5-4 CSG, bits 3-2 NSG, bit 1 a different ISID, bit 0 version 1.
func fuzzRequest(flags byte, data []byte) Request {
	r := Request{
		Transit:  flags&0x80 != 0,
		Continue: flags&0x40 != 0,
		CSG:      flags >> 4 & 3,
		NSG:      flags >> 2 & 3,
		ISID:     isid,
		Data:     data,
	}
	if flags&2 != 0 {
		r.ISID[5] ^= 0xff
	}
	if flags&1 != 0 {
		r.VersionMin, r.VersionMax = 1, 1
	}
	return r
}

func flagsOf(r Request) byte {
	var f byte
	if r.Transit {
		f |= 0x80
	}
	if r.Continue {
		f |= 0x40
	}
	return f | r.CSG<<4 | r.NSG<<2
}

func FuzzLoginStep(f *testing.F) {
	decisions := []Decision{allow, allowCHAP, allowBoth, {NotFound: true}, {}}
	op13 := flagsOf(Request{Transit: true, CSG: 1, NSG: 3})
	sec01 := flagsOf(Request{Transit: true, CSG: 0, NSG: 1})
	sec0 := flagsOf(Request{CSG: 0})
	f.Add(byte(0), op13, textData(cat(openISCSIIdentity, openISCSIOps)...), op13, []byte(nil), op13, []byte(nil))
	f.Add(byte(1), sec01, textData(cat(openISCSIIdentity, []string{"AuthMethod=CHAP"})...), sec0, textData("CHAP_A=5"),
		sec01, textData("CHAP_N="+chapUser, "CHAP_R=0x00", "CHAP_I=1", "CHAP_C=0x0102"))
	f.Add(byte(2), sec01, textData(cat(libiscsiIdentity, []string{"AuthMethod=CHAP,None"})...), sec0, textData("CHAP_A=7,5"),
		op13, textData(libiscsiOps...))
	f.Add(byte(0), flagsOf(Request{Continue: true, CSG: 1}), textData(openISCSIIdentity...)[:20],
		op13, textData(openISCSIIdentity...)[20:], op13, []byte(nil))
	f.Add(byte(0), op13, textData("InitiatorName="+openISCSIName, "SessionType=Discovery", "X-a=1"), byte(0xff), []byte{0}, byte(0), []byte("x"))
	f.Fuzz(func(t *testing.T, dsel, f1 byte, d1 []byte, f2 byte, d2 []byte, f3 byte, d3 []byte) {
		l, _ := newLogin(decisions[int(dsel)%len(decisions)], Limits{})
		var pending []byte
		failed := false
		for _, r := range []Request{fuzzRequest(f1, d1), fuzzRequest(f2, d2), fuzzRequest(f3, d3)} {
			resp, err := l.Step(r)
			class := resp.StatusClass
			if class != 0 && class != 2 && class != 3 {
				t.Fatalf("status class %d", class)
			}
			if (err != nil) != (class != 0) {
				t.Fatalf("error %v with status %s", err, resp.Status())
			}
			if failed && err == nil {
				t.Fatalf("a failed login accepted a request")
			}
			if err != nil {
				failed = true
				if resp.Transit || len(resp.Data) > 0 {
					t.Fatalf("reject response with T=%v and %d bytes", resp.Transit, len(resp.Data))
				}
				continue
			}
			if resp.Transit && resp.Continue {
				t.Fatal("response with T and C")
			}
			if resp.Transit && (!r.Transit || resp.NSG <= resp.CSG || resp.NSG == 2) {
				t.Fatalf("bad transit %+v for %+v", resp, r)
			}
			if len(resp.Data) > loginSegmentSize {
				t.Fatalf("response of %d bytes", len(resp.Data))
			}
			pending = append(pending, resp.Data...)
			if !resp.Continue {
				if _, err := text.ParseText(pending); err != nil {
					t.Fatalf("response text does not parse: %v", err)
				}
				pending = nil
			}
			if l.Done() && l.Result().InitiatorName == "" {
				t.Fatal("done without an initiator name")
			}
		}
	})
}
