// Package md is guestraid's I/O with Linux md: Debian's mdadm for what
// needs superblock handling (create, assemble, add, re-add, examine) and
// md sysfs for the rest (state, flags, removing a faulty leg, scrubs).
// Parsing is separate from running, so it is unit-tested on real output.
package md

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// Super is what guestraid needs of a leg's v1.x superblock (mdadm
// --examine).
type Super struct {
	ArrayUUID string
	DevUUID   string
	Name      string // without mdadm's "homehost:" prefix
	Level     string // raid1
	Devices   int    // Raid Devices
	Events    uint64
	// Slot is the leg's role: its slot number, or -1 for a spare (or a
	// faulty or replacement role).
	Slot int
	// ArrayState is the leg's own view of the array by slot: 'A' active,
	// '.' missing (or failed), 'R' replacing.
	ArrayState string
	State      string // clean, active…
}

// ActiveIn says whether this superblock regards slot as an active member.
func (s *Super) ActiveIn(slot int) bool {
	return slot >= 0 && slot < len(s.ArrayState) && (s.ArrayState[slot] == 'A' || s.ArrayState[slot] == 'R')
}

// ParseExamine parses `mdadm --examine <dev>` of a v1.x superblock.
func ParseExamine(out string) (*Super, error) {
	s := &Super{Slot: -1}
	var haveEvents, haveUUID bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " : ")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "Array UUID":
			s.ArrayUUID, haveUUID = v, true
		case "Device UUID":
			s.DevUUID = v
		case "Name":
			// "any:demo-root", "host:name  (local to host host)"
			name, _, _ := strings.Cut(v, " ")
			if _, after, ok := strings.Cut(name, ":"); ok {
				name = after
			}
			s.Name = name
		case "Raid Level":
			s.Level = v
		case "Raid Devices":
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("mdadm --examine: Raid Devices %q: %w", v, err)
			}
			s.Devices = n
		case "Events":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("mdadm --examine: Events %q: %w", v, err)
			}
			s.Events, haveEvents = n, true
		case "Device Role":
			if n, ok := strings.CutPrefix(v, "Active device "); ok {
				slot, err := strconv.Atoi(n)
				if err != nil {
					return nil, fmt.Errorf("mdadm --examine: Device Role %q: %w", v, err)
				}
				s.Slot = slot
			}
		case "Array State":
			s.ArrayState, _, _ = strings.Cut(v, " ")
		case "State":
			s.State = v
		}
	}
	if !haveUUID || !haveEvents {
		return nil, fmt.Errorf("mdadm --examine: no Array UUID or Events (not a v1.x superblock?)")
	}
	return s, nil
}

// Bitmap is what `mdadm --examine-bitmap` says of a leg's internal bitmap.
type Bitmap struct {
	ChunkBytes int64
	Bits       int64
	Dirty      int64
	Events     uint64
	Cleared    uint64 // Events Cleared
}

// DirtyBytes is how much a bitmap re-add has to copy at most.
func (b Bitmap) DirtyBytes() int64 { return b.Dirty * b.ChunkBytes }

// ParseBitmap parses `mdadm --examine-bitmap <dev>`.
func ParseBitmap(out string) (Bitmap, error) {
	var b Bitmap
	var haveChunk, haveBits bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " : ")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "Chunksize":
			n, err := parseSize(v)
			if err != nil {
				return b, fmt.Errorf("mdadm -X: Chunksize: %w", err)
			}
			b.ChunkBytes, haveChunk = n, true
		case "Bitmap":
			// "255 bits (chunks), 8 dirty (3.1%)"
			if _, err := fmt.Sscanf(v, "%d bits (chunks), %d dirty", &b.Bits, &b.Dirty); err != nil {
				return b, fmt.Errorf("mdadm -X: Bitmap %q: %w", v, err)
			}
			haveBits = true
		case "Events":
			b.Events, _ = strconv.ParseUint(v, 10, 64)
		case "Events Cleared":
			b.Cleared, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	if !haveChunk || !haveBits {
		return b, fmt.Errorf("mdadm -X: no Chunksize or Bitmap line (no internal bitmap?)")
	}
	return b, nil
}

// parseSize parses mdadm's "1 MB", "512 KB", "64 MB", "4096 B" (binary
// units: mdadm prints chunk>>10 as KB).
func parseSize(v string) (int64, error) {
	f := strings.Fields(v)
	if len(f) != 2 {
		return 0, fmt.Errorf("size %q", v)
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", v, err)
	}
	switch f[1] {
	case "B":
	case "KB":
		n <<= 10
	case "MB":
		n <<= 20
	case "GB":
		n <<= 30
	case "TB":
		n <<= 40
	default:
		return 0, fmt.Errorf("size %q: unit", v)
	}
	return n, nil
}

// ParseSyncCompleted parses md's sync_completed ("1024 / 524288" sectors,
// or "none") into a fraction in [0, 1]; ok is false for "none".
func ParseSyncCompleted(v string) (frac float64, ok bool) {
	var done, total uint64
	if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d / %d", &done, &total); err != nil || total == 0 {
		return 0, false
	}
	return float64(done) / float64(total), true
}
