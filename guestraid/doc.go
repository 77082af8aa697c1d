// Package guestraid is the in-guest helper that creates, assembles, watches
// and repairs a guest's md RAID1 across its two legs, and builds the guest
// images that carry it.
package guestraid
