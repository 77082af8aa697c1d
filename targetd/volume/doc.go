// Package volume keeps the guest disk legs of one storage node: it creates,
// lists, grows and removes them by name (mhc-<guest>-<disk>, see package
// naming) and opens them as scsi.BlockDev for targetd.
//
// Two backends exist, picked by the node's storage section of the cluster
// file: LVM logical volumes (driven through lvm2's commands with JSON
// reports, the command runner injected so the logic is testable without
// device-mapper) and sparse files in a directory (the loopback demo and the
// tests). Both make the same promises:
//
//   - Create is idempotent: an existing volume of the right size is left
//     alone, one of another size is an error naming both sizes.
//   - Volumes only grow: Extend refuses to shrink, because shrinking a leg
//     cuts off the end of the guest's mirror.
//   - Remove refuses a volume that is open, so a leg that targetd serves is
//     never pulled from under it.
//   - Only names that package naming could have made are accepted, so
//     nothing outside the volume group or directory can be touched.
package volume
