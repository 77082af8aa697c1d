package scsi

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

var (
	nexusA = Nexus{InitiatorName: "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test", ISID: "0x400001370000",
		TargetName: "iqn.2026-11.org.mhcodi:prod.node-a.web1.root", TPGT: 1, RelativePortID: 1}
	nexusB = Nexus{InitiatorName: "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2", ISID: "0x400001370001",
		TargetName: "iqn.2026-11.org.mhcodi:prod.node-a.web1.root", TPGT: 1, RelativePortID: 1}
)

const testBlocks = 1024

type fixture struct {
	t   testing.TB
	tgt *Target
	lu  *LU
	dev *MemDev
	tag atomic.Uint32
}

// newFixture builds a target with one LU at LUN 0 on a MemDev of
// testBlocks blocks; mods adjust the LU configuration.
func newFixture(t testing.TB, mods ...func(*LUConfig)) *fixture {
	t.Helper()
	cfg := LUConfig{Serial: "MHC0123456789", WWN: [8]byte{0x30, 1, 2, 3, 4, 5, 6, 7}, ProductID: "TESTDISK"}
	for _, m := range mods {
		m(&cfg)
	}
	bs := int64(cfg.LogicalBlockSize)
	if bs == 0 {
		bs = 512
	}
	var dev *MemDev
	if cfg.Dev == nil {
		dev = NewMemDev(testBlocks*bs, true)
		cfg.Dev = dev
	} else if m, ok := cfg.Dev.(*MemDev); ok {
		dev = m
	}
	lu, err := NewLU(cfg)
	require.NoError(t, err)
	tgt := NewTarget(TargetOptions{})
	require.NoError(t, tgt.AddLU(0, lu))
	return &fixture{t: t, tgt: tgt, lu: lu, dev: dev}
}

func thin(c *LUConfig)     { c.ThinProvisioned = true }
func bs4k(c *LUConfig)     { c.LogicalBlockSize = 4096 }
func phys4k(c *LUConfig)   { c.PhysicalBlockSize = 4096 }
func readOnly(c *LUConfig) { c.ReadOnly = true }

// do runs one command on LUN 0 and fails the test on ErrAborted.
func (f *fixture) do(n Nexus, cdb []byte, data []byte) Result {
	f.t.Helper()
	res, err := f.exec(context.Background(), n, 0, cdb, data)
	require.NoError(f.t, err)
	return res
}

func (f *fixture) exec(ctx context.Context, n Nexus, lun uint64, cdb []byte, data []byte) (Result, error) {
	cmd := &Command{Nexus: n, LUN: lun, Tag: f.tag.Add(1), Attr: Simple, CDB: cdb, Data: data,
		ExpectedLen: uint32(len(data)), Write: len(data) > 0}
	return f.tgt.Execute(ctx, cmd)
}

// good runs a command and requires GOOD status.
func (f *fixture) good(n Nexus, cdb []byte, data []byte) Result {
	f.t.Helper()
	res := f.do(n, cdb, data)
	requireGood(f.t, res)
	return res
}

func requireGood(t testing.TB, res Result) {
	t.Helper()
	if res.Status != StatusGood {
		key, a, q, _ := Sense(res.Sense)
		t.Fatalf("status 0x%02x sense %02x/%02x/%02x, want GOOD", res.Status, key, a, q)
	}
}

// requireSense requires CHECK CONDITION with the given sense.
func requireSense(t testing.TB, res Result, key byte, code asc) {
	t.Helper()
	require.Equal(t, StatusCheckCondition, res.Status, "status")
	k, a, q, ok := Sense(res.Sense)
	require.True(t, ok, "sense data %x", res.Sense)
	require.Equal(t, [3]byte{key, byte(code >> 8), byte(code)}, [3]byte{k, a, q}, "sense key/ASC/ASCQ")
}

func requireConflict(t testing.TB, res Result) {
	t.Helper()
	require.Equal(t, StatusReservationConflict, res.Status, "want RESERVATION CONFLICT")
}

// clearUAs sends TEST UNIT READY until it passes.
func (f *fixture) clearUAs(n Nexus) {
	f.t.Helper()
	for i := 0; i < maxUAs+1; i++ {
		if f.do(n, tur(), nil).Status == StatusGood {
			return
		}
	}
	f.t.Fatal("unit attentions do not clear")
}

// CDB builders.

func tur() []byte { return make([]byte, 6) }

func rw6(op byte, lba uint32, n byte) []byte {
	return []byte{op, byte(lba >> 16 & 0x1f), byte(lba >> 8), byte(lba), n, 0}
}

func rw10c(op byte, flags byte, lba uint32, n uint16) []byte {
	c := make([]byte, 10)
	c[0], c[1] = op, flags
	be32put(c[2:], lba)
	be16put(c[7:], n)
	return c
}

func rw12c(op byte, flags byte, lba uint32, n uint32) []byte {
	c := make([]byte, 12)
	c[0], c[1] = op, flags
	be32put(c[2:], lba)
	be32put(c[6:], n)
	return c
}

func rw16c(op byte, flags byte, lba uint64, n uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = op, flags
	be64put(c[2:], lba)
	be32put(c[10:], n)
	return c
}

func inquiryCDB(evpd bool, page byte, alloc uint16) []byte {
	c := []byte{opInquiry, 0, page, 0, 0, 0}
	if evpd {
		c[1] = 1
	}
	be16put(c[3:], alloc)
	return c
}

func cawCDB(lba uint64, n byte) []byte {
	c := make([]byte, 16)
	c[0] = opCompareAndWrite
	be64put(c[2:], lba)
	c[13] = n
	return c
}

func fill(n int, b byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = b
	}
	return p
}
