package iscsitest

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The testdata files are real outputs of libiscsi 1.19.0's tools, captured
// against tgt 1.0.85, gotgt v0.2.2 and mhcodi-targetd on this project's
// build machine: testcu_targetd_old_all.txt is targetd before it offered
// SWP and GET LBA STATUS (one URL), testcu_targetd_all.txt after (two
// URLs, so MultipathIO runs).

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	require.NoError(t, err)
	return string(b)
}

func TestParseTestCUGotgtFailure(t *testing.T) {
	rep, err := parseTestCU(readTestdata(t, "testcu_gotgt_residuals.txt"))
	require.NoError(t, err)
	require.Len(t, rep.Tests, 7)

	// CompareAndWrite skips itself on gotgt: not a pass unless allowed.
	caw, ok := rep.Result("CompareAndWrite.Simple")
	require.True(t, ok)
	assert.Equal(t, Skipped, caw.Status)
	assert.Equal(t, "COMPAREANDWRITE is not implemented.", caw.Detail)
	prov, _ := rep.Result("CompareAndWrite.InvalidDataOutSize")
	assert.Equal(t, Skipped, prov.Status)
	assert.Contains(t, prov.Detail, "fully provisioned")

	// "passed    [FAILED] PRIN …" is a pass followed by a teardown log.
	r10, _ := rep.Result("Read10.Simple")
	assert.Equal(t, Passed, r10.Status)

	res, _ := rep.Result("iSCSIResiduals.Write10Residuals")
	assert.Equal(t, Failed, res.Status)
	assert.Equal(t, 13, strings.Count(res.Detail, "\n")+1, "one detail line per failed assertion")
	assert.Contains(t, res.Detail, "test_write10_residuals.c:96")
	assert.NotContains(t, res.Detail, "PRIN", "teardown log glued to the last assertion is cut off")

	rep.applyAllow(map[string]string{"CompareAndWrite": "not implemented by gotgt"})
	caw, _ = rep.Result("CompareAndWrite.Unwritten")
	assert.Equal(t, AllowedSkip, caw.Status)
	assert.Contains(t, caw.Detail, "not implemented by gotgt")
	assert.False(t, rep.OK())
	require.Len(t, rep.Problems(), 1)
	assert.Equal(t, "iSCSIResiduals.Write10Residuals", rep.Problems()[0].Name())
	assert.Contains(t, rep.Summary(), "FAILED   iSCSIResiduals.Write10Residuals")
}

func TestParseTestCUSkipsCountAsFailures(t *testing.T) {
	rep, err := parseTestCU(readTestdata(t, "testcu_tgt_unmap.txt"))
	require.NoError(t, err)
	require.Len(t, rep.Tests, 5)
	assert.False(t, rep.OK(), "three Unmap tests skipped and nothing allows them")
	assert.Len(t, rep.Problems(), 3)

	rep.applyAllow(map[string]string{"Unmap.VPD": "x", "Unmap.Simple": "y"})
	require.Len(t, rep.Problems(), 1)
	assert.Equal(t, "Unmap.ZeroBlocks", rep.Problems()[0].Name())
}

func TestParseTestCUCatchesMismatch(t *testing.T) {
	out := readTestdata(t, "testcu_tgt_unmap.txt")

	// A test line the parser cannot see makes the counts disagree.
	_, err := parseTestCU(strings.Replace(out, "  Test: Simple ...passed", "  Tst: Simple ...passed", 1))
	assert.ErrorContains(t, err, "5 tests ran, parsed 4")

	// Killed mid-test: no summary, and the running test has no verdict.
	cut := out[:strings.Index(out, "  Test: Write10Residuals ...")+len("  Test: Write10Residuals ...")]
	rep, err := parseTestCU(cut)
	assert.ErrorContains(t, err, "no run summary")
	rep.markStalled()
	last := rep.Tests[len(rep.Tests)-1]
	assert.Equal(t, Stalled, last.Status)
	assert.Equal(t, "iSCSIResiduals.Write10Residuals", last.Name())
}

// TestParseTestCUList: --list gives every family with its tests; a line
// out of place is an error, not a shorter list.
func TestParseTestCUList(t *testing.T) {
	l, err := parseTestCUList(readTestdata(t, "testcu_list.txt"))
	require.NoError(t, err)
	assert.Equal(t, []string{"ALL", "SCSI", "iSCSI", "LINUX"}, l.Families)
	for fam, n := range map[string]int{"ALL": 230, "SCSI": 215, "iSCSI": 15, "LINUX": 155} {
		assert.Len(t, l.Tests[fam], n, fam)
	}
	assert.Equal(t, "CompareAndWrite.Simple", l.Tests["ALL"][0])
	assert.Contains(t, l.Tests["LINUX"], "MultipathIO.Reset")
	assert.Contains(t, l.Tests["SCSI"], "Sanitize.Readonly")

	for _, bad := range []string{
		"",
		"ALL\n",                    // a family without tests
		"ALL.Read10.Simple\n",      // before its family
		"ALL\nALL.Read10.Simple\n", // before its suite
		"ALL\nALL.Read10\nALL.Read10.Sim ple\n",
		"ALL\nALL.Read10\nALL.Read10.A.B\n",
		"ALL\nALL.Read10\nALL.Read10.Simple\nALL\n", // twice
		"ALL\nALL.Read10\nALL.Read10.Simple\n\nSCSI\n",
	} {
		_, err := parseTestCUList(bad)
		assert.Error(t, err, "%q", bad)
	}
}

// TestParseTestCUTargetdOld: targetd's full run before SWP, GET LBA STATUS
// and the reset fix: Control-SWP "passed" having tested nothing, and only
// its log line tells; Sanitize.Readonly failed on the same line.
func TestParseTestCUTargetdOld(t *testing.T) {
	rep, err := parseTestCU(readTestdata(t, "testcu_targetd_old_all.txt"))
	require.NoError(t, err)
	require.Len(t, rep.Tests, 230)
	swp, _ := rep.Result("ModeSense6.Control-SWP")
	assert.Equal(t, Skipped, swp.Status)
	assert.Contains(t, swp.Detail, "SWP")
	ro, _ := rep.Result("Sanitize.Readonly")
	assert.Equal(t, Failed, ro.Status)
	assert.Contains(t, ro.Detail, "test_sanitize_readonly.c:60")
	mp, _ := rep.Result("MultipathIO.Reset")
	assert.Equal(t, Skipped, mp.Status, "one URL: no multipath")
	gls, _ := rep.Result("GetLBAStatus.Simple")
	assert.Equal(t, Skipped, gls.Status)
}

// TestTestCUExpectFail: an expected failure that fails as described is
// OK; one that fails otherwise, or passes, is a problem; the keys that
// matched are recorded, so stale entries can be found.
func TestTestCUExpectFail(t *testing.T) {
	parse := func() *TestCUReport {
		rep, err := parseTestCU(readTestdata(t, "testcu_targetd_all.txt"))
		require.NoError(t, err)
		return rep
	}
	list, err := parseTestCUList(readTestdata(t, "testcu_list.txt"))
	require.NoError(t, err)

	rep := parse()
	require.Len(t, rep.Tests, 230)
	assert.Empty(t, rep.Missing(list.Tests["ALL"]), "a full run reports every listed test")
	assert.Equal(t, []string{"Read10.Nonesuch"}, rep.Missing(append([]string{"Read10.Nonesuch"}, list.Tests["ALL"]...)))
	mp, _ := rep.Result("MultipathIO.Reset")
	assert.Equal(t, Passed, mp.Status, "two paths: the reset test ran and passed")
	require.Equal(t, Failed, func() Status { r, _ := rep.Result("GetLBAStatus.UnmapSingle"); return r.Status }())

	rep.applyAllow(map[string]string{"Sanitize": "x", "Nonesuch": "y"})
	rep.applyExpectFail(map[string]ExpectedFailure{
		"GetLBAStatus.UnmapSingle": {Reason: "libiscsi bug", Match: "lba offset in first descriptor"},
		"Read10.Simple":            {Reason: "stale", Match: "whatever"},
	})
	r, _ := rep.Result("GetLBAStatus.UnmapSingle")
	assert.Equal(t, ExpectedFail, r.Status)
	assert.True(t, r.OK())
	assert.Contains(t, r.Detail, "libiscsi bug")
	r, _ = rep.Result("Read10.Simple")
	assert.Equal(t, UnexpectedPass, r.Status)
	assert.False(t, r.OK())
	assert.Equal(t, map[string]bool{"Sanitize": true, "GetLBAStatus.UnmapSingle": true, "Read10.Simple": true}, rep.Used)
	assert.Contains(t, rep.Summary(), "1 failed (expected), 1 passed (expected to fail)")

	rep = parse()
	rep.applyExpectFail(map[string]ExpectedFailure{"GetLBAStatus.UnmapSingle": {Reason: "r", Match: "some other assertion"}})
	r, _ = rep.Result("GetLBAStatus.UnmapSingle")
	assert.Equal(t, Failed, r.Status, "failing another way is not the expected failure")
	assert.Contains(t, r.Detail, "failed otherwise")
}

func TestParsePerf(t *testing.T) {
	r, err := parsePerf(readTestdata(t, "perf_tgt.txt"))
	require.NoError(t, err)
	assert.Equal(t, 26552.0, r.IOPS, "the final average, not a progress line's")
	assert.Equal(t, int64(4096), r.BytesPerIO)
	assert.InDelta(t, 103.7, r.MiBps(), 0.1)

	r, err = parsePerf(readTestdata(t, "perf_gotgt.txt"))
	require.NoError(t, err)
	assert.Equal(t, 22399.0, r.IOPS)

	// A stalled run prints progress but never its last line.
	out := readTestdata(t, "perf_gotgt.txt")
	_, err = parsePerf(out[:strings.LastIndex(out, "finished.")])
	assert.ErrorContains(t, err, "finished")
}

func TestParseVmHWM(t *testing.T) {
	n, err := parseVmHWM([]byte("Name:\ttgtd\nVmPeak:\t  100 kB\nVmHWM:\t   28228 kB\nVmRSS:\t 1 kB\n"))
	require.NoError(t, err)
	assert.Equal(t, int64(28228*1024), n)
	_, err = parseVmHWM([]byte("Name:\tx\n"))
	assert.Error(t, err)
	assert.Equal(t, "27.6 MiB", FormatBytes(28228*1024))
}

func TestCheckURL(t *testing.T) {
	for _, ok := range []string{
		"iscsi://127.0.0.1:3260/iqn.2026-11.org.mhcodi:x/1",
		"iscsi://user%secret@127.0.0.5:3260/iqn.x/0",
		"iscsi://127.0.0.1:3260/iqn.x/0?header_digest=crc32c",
	} {
		assert.NoError(t, checkURL(ok), ok)
	}
	for _, bad := range []string{
		"iscsi://10.0.0.1:3260/iqn.x/1", // not loopback
		"iscsi://[::1]:3260/iqn.x/1",    // IPv6: the harness is IPv4-only
		"http://127.0.0.1/iqn.x/1",
		"iscsi://127.0.0.1:3260/iqn.x",
	} {
		assert.Error(t, checkURL(bad), bad)
	}
	u, err := WithCHAP("iscsi://127.0.0.1:3260/iqn.x/1", "u", "p%1")
	require.NoError(t, err)
	assert.Equal(t, "iscsi://u%p%1@127.0.0.1:3260/iqn.x/1", u)
}

func TestQemuLUNArgs(t *testing.T) {
	a, err := QemuLUN{URL: "iscsi://127.0.0.1:3260/iqn.x:y/1"}.args()
	require.NoError(t, err)
	assert.Equal(t, []string{"-f", "raw", "iscsi://127.0.0.1:3260/iqn.x:y/1"}, a)

	a, err = QemuLUN{URL: "iscsi://127.0.0.1:3260/iqn.x:y/1", HeaderDigest: "crc32c", Initiator: "iqn.i"}.args()
	require.NoError(t, err)
	assert.Equal(t, []string{"--image-opts",
		"driver=iscsi,transport=tcp,portal=127.0.0.1:3260,target=iqn.x:y,lun=1,header-digest=crc32c,initiator-name=iqn.i"}, a)
}

func TestParseCapacity(t *testing.T) {
	c, err := parseCapacity("RETURNED LOGICAL BLOCK ADDRESS:524287\nLOGICAL BLOCK LENGTH IN BYTES:512\n" +
		"P_TYPE:0 PROT_EN:0\nP_I_EXPONENT:0 LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT:3\nTotal size:268435456\n")
	require.NoError(t, err)
	assert.Equal(t, Capacity{BlockSize: 512, Blocks: 524288}, c)
	assert.Equal(t, int64(256<<20), c.Bytes())
	_, err = parseCapacity("iscsi_connect failed\n")
	assert.Error(t, err)
}
