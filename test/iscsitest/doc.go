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
// gotgt keeps its LU map and target service in globals of its own, so at
// most one gotgt can run in a process at a time.
package iscsitest
