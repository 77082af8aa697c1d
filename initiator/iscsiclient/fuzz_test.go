package iscsiclient

import (
	"bytes"
	"testing"

	"github.com/mhcodi/mhcodi/iscsi/text"
)

// FuzzLoginMachine feeds the initiator's login machine Login Responses a
// hostile target could send (any flags, stages, status, text) and checks
// it never panics, never loops past maxLoginRounds, and never finishes a
// login with mutual CHAP configured unless the target answered our
// challenge.
func FuzzLoginMachine(f *testing.F) {
	f.Add([]byte("AuthMethod=CHAP\x00"), []byte("CHAP_A=5\x00CHAP_I=1\x00CHAP_C=0x0102030405060708090a0b0c0d0e0f10\x00"), []byte("CHAP_N=x\x00CHAP_R=0x00\x00"), uint8(0x87))
	f.Add([]byte("AuthMethod=None\x00"), []byte("HeaderDigest=None\x00MaxRecvDataSegmentLength=512\x00"), []byte{}, uint8(0x83))
	f.Add([]byte{}, []byte("=\x00\x00"), []byte("MaxBurstLength=1\x00"), uint8(0xff))
	f.Fuzz(func(t *testing.T, a, b, c []byte, flags uint8) {
		for _, mutual := range []bool{false, true} {
			cfg := Config{TargetIQN: testTarget, InitiatorIQN: testInitiator,
				CHAP: &CHAP{User: testInitiator, Secret: "twelve-bytes-or-more"},
				Rand: bytes.NewReader(bytes.Repeat([]byte{9}, 4096))}
			if mutual {
				cfg.MutualCHAP = &CHAP{User: testTarget, Secret: "the-targets-own-secret"}
			}
			m := newLoginMachine(cfg)
			m.start()
			texts := [][]byte{a, b, c}
			for i := 0; i < maxLoginRounds+2; i++ {
				f := flags >> (i % 8)
				r := loginResponse{Transit: f&1 != 0, Continue: f&2 != 0, CSG: m.stage, NSG: (f >> 2) & 3,
					Data: texts[i%3]}
				if f&0x80 != 0 && i == 5 {
					r.Status = text.StatusAuthFailed
				}
				_, done, err := m.step(r)
				if err != nil {
					break
				}
				if done {
					if mutual && m.chap != chapVerified {
						t.Fatalf("login finished with mutual CHAP configured but chap step %d", m.chap)
					}
					break
				}
				if i > maxLoginRounds {
					t.Fatalf("login went on past %d rounds", maxLoginRounds)
				}
			}
		}
	})
}
