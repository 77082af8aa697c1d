// Package initiator imports the legs that live on other nodes (kernel
// initiator through open-iscsi or netlink), keeps /dev/mhcodi/<guest>/<disk>/<node>
// pointing at the right device on every host, and renders the drive specs of
// hypervisors that speak iSCSI themselves (QEMU's libiscsi driver).
package initiator
