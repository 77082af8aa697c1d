// Package iscsiclient is a small iSCSI initiator (RFC 7143) for one
// session over one TCP connection, at ErrorRecoveryLevel 0: login with
// optional CHAP, one-way or mutual, then concurrent SCSI commands (READ(16),
// WRITE(16), SYNCHRONIZE CACHE(16), READ CAPACITY(16), TEST UNIT READY)
// within the target's CmdSN window, NOP pings both ways, and logout.
//
// It exists because QEMU's own iSCSI driver (libiscsi) reconnects
// synchronously inside QEMU's main loop and freezes the guest while a
// target is down; mhcodi-bridge uses this package to keep iSCSI on the
// wire and hands the disk to QEMU over NBD instead (see initiator/bridge).
//
// The protocol logic is pure and socket-free: loginMachine turns Login
// Responses into Login Requests, engine turns received PDUs into PDUs to
// send and finished commands. Session adds the connection, a reader and a
// writer goroutine, and the ping timer. A connection that dies fails every
// outstanding command with an error matching ErrConnectionLost; the
// session is then finished and the caller dials a new one.
package iscsiclient
