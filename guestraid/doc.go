// Package guestraid is the in-guest helper that creates, assembles, watches
// and repairs a guest's md RAID1 across its two legs, and builds the guest
// images that carry it.
//
// Subpackages: channel is the JSON-lines protocol with the host
// (virtio-serial port org.mhcodi.guestraid.0, host info through fw_cfg);
// md is the I/O with Debian's mdadm and md sysfs; raid is the policy
// (assembly plan, split brain, stale legs, flags) as pure functions and a
// state machine, and the service that carries it out; boot is what the
// command does as a u-root image's uinit. The command is cmd/guestraid;
// README.md says how to use it.
package guestraid
