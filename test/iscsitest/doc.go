// Package iscsitest tests and benchmarks iSCSI targets with real clients.
//
// A Target is anything that exports one file as an iSCSI LUN on loopback:
// Debian's tgtd (StartTgt), gotgt embedded in this process (StartGotgt), or
// any daemon binary started from a config file it is handed (StartCommand,
// the slot for mhcodi-targetd). The clients are the real ones an operator
// would use: libiscsi's conformance suite (RunTestCU) and load generator
// (RunPerf), and QEMU's iSCSI block driver through qemu-img bench
// (RunQemuImgBench) and qemu-io (RunQemuIOPattern).
//
// Rules the package keeps, because the machines it runs on are shared:
//
//   - All traffic goes to 127.0.0.0/8. Portals are picked by binding port 0
//     on a loopback address.
//   - Every process it starts is stopped by its PID (never by name), also
//     when the caller fails: children get PR_SET_PDEATHSIG so they die with
//     this process even when it is killed, and Cleanup runs the stop
//     functions on SIGINT/SIGTERM before the process dies.
//   - Every temp file lives in a directory the starter made and Stop
//     removes.
//
// Clients are bounded: each run has a deadline, a client that outlives it
// (iscsi-perf hangs on a target that stops answering) is killed and
// reported as stalled rather than hanging the caller.
//
// The only package-level mutable state is the gotgt slot in gotgt.go:
// gotgt keeps its LU map and target service in globals of its own, so it
// can be started once per process. To restart it, or to keep its data
// races away from a `go test -race` binary, run it in a child process that
// embeds it the same way (StartGotgtProcess and ServeGotgtHelper).
//
// What the peers taught this harness (tgt 1.0.85, gotgt v0.2.2, libiscsi
// 1.19.0, QEMU 7.2, measured on the build machine):
//
//   - iscsi-test-cu records a skipped test as passed, in its exit code and
//     in its -x XML alike; only the text output names the skip. RunTestCU
//     parses the text and checks it against CUnit's own totals.
//   - iscsi-perf polls with no timeout and takes SIGTERM as "finish the
//     commands in flight", so against a target that drops a command it
//     never exits: it is killed with SIGKILL at its deadline.
//   - tgtd ignores SIGTERM while it has targets, and accepts -C only up to
//     32767.
//   - tgt allows only HeaderDigest=None unless configured, and then
//     answers None even to a CRC32C-only offer, which QEMU's libiscsi
//     accepts: asking QEMU for header-digest=crc32c does not mean digests
//     are on. LoginSniffer shows what was actually negotiated.
package iscsitest
