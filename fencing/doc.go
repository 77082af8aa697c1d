// Package fencing keeps every guest running on one host only: the ownership
// ledger on etcd, leases and epochs, I/O fencing through targetd, self-fencing,
// the running-guest monitor and the hypervisor drivers (qemu, xen xl).
package fencing
