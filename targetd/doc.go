// Package targetd is mhcodi's iSCSI target: PDU codec, login and
// negotiation, sessions, SCSI (SBC/SPC/PR) over a block-device interface,
// volume backends, ACLs, CHAP and the local control API. It exports each
// storage node's guest disk legs under the names of package naming.
package targetd
