// Package initiator imports the legs that live on other nodes (kernel
// initiator through open-iscsi or netlink), keeps /dev/mhcodi/<guest>/<disk>/<node>
// pointing at the right device on every host, and renders the drive specs of
// hypervisors that speak iSCSI themselves (QEMU's libiscsi driver).
//
// The import side is split the way the rest of mhcodi is:
//
//   - Plan (want.go) turns the cluster file into the legs this node must
//     see: every leg of every guest that may run here (a guest runs on the
//     nodes holding its legs, or on its preferred node).
//   - Reconciler (reconcile.go) is the policy, a pure state machine: the
//     wanted legs and what was observed (kernel sessions, their block
//     devices, the links on disk, the local volumes) go in; actions (log
//     in, log out, link, unlink), per-leg states (up, down, refused,
//     pending, hypervisor, each with since-when and a reason) and
//     once-per-change events come out. Retries back off; a refusal (CHAP,
//     ACL, unknown target) is retried slowly and reported once.
//   - A Backend (open-iscsi in initiator/openiscsi, iscsinl in
//     initiator/netlink) does the logins; Links does the symlinks
//     atomically; ReadSessions reads the kernel's sessions from sysfs.
//   - Importer (importer.go) is the loop that feeds one to the other and
//     writes the state file (state.go) that `mhcodi import status` reads.
package initiator
