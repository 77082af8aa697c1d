// Package channel is the protocol between guestraid in a guest and the
// host that runs it: JSON objects, one per line, over the virtio-serial
// port named PortName (the same name on Xen's console channels), plus the
// boot-time host info the qemu driver passes through fw_cfg.
//
// Host → guest: Host (who runs the guest now, which legs are local and
// which are stale) and Check (start a scrub). Guest → host: State (an
// array's condition, on every change and every 5 s) and Event (something
// happened: a leg failed, was re-added, a resync finished…).
package channel

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// PortName is the name of the virtio-serial port (and Xen channel) the
// guest talks to the host on.
const PortName = "org.mhcodi.guestraid.0"

// FwCfgName is the fw_cfg item the qemu driver passes the host info in
// (-fw_cfg name=opt/org.mhcodi/host,file=…), and FwCfgPath where the
// guest kernel's qemu_fw_cfg module shows it.
const (
	FwCfgName = "opt/org.mhcodi/host"
	FwCfgPath = "/sys/firmware/qemu_fw_cfg/by_name/" + FwCfgName + "/raw"
)

// Message types.
const (
	TypeHost  = "host"
	TypeCheck = "check"
	TypeState = "state"
	TypeEvent = "event"
)

// Event words of Event.Event.
const (
	EventCreated    = "created"     // a new array was created on blank legs
	EventAssembled  = "assembled"   // an existing array was assembled
	EventDegraded   = "degraded"    // the array runs with fewer legs than it has slots
	EventFail       = "fail"        // md marked a leg faulty
	EventRemoved    = "removed"     // a faulty leg was removed from the array
	EventReAdd      = "readd"       // a returning leg was re-added through the bitmap (DirtyBytes)
	EventAdd        = "add"         // a blank or wiped leg was added (full resync)
	EventWipe       = "wipe"        // a stale leg's superblock and first MiBs were zeroed
	EventResyncDone = "resync-done" // a recovery or resync finished (ResyncBytes)
	EventCheckStart = "check-start" // a check scrub was started
	EventCheckDone  = "check-done"  // a check scrub finished (mismatch_cnt in Detail)
	EventSplit      = "split"       // two legs both claim to be current; one is left out
	EventNoHostInfo = "no-host-info"
	EventHost       = "host"     // new host info was applied
	EventFlags      = "flags"    // a leg's write-mostly/failfast flags changed
	EventLeftOut    = "left-out" // a present leg is kept out of the array (Detail says why)
	EventError      = "error"    // an action failed (Detail)
	EventStopped    = "stopped"  // the array was stopped (shutdown, or by someone else: then left stopped)
)

// Leg is one leg of a disk as the host sees it.
type Leg struct {
	Node   string `json:"node"`
	Serial string `json:"serial"`
	// Local is true for the leg on the node the guest runs on: it is the
	// read leg; the other is write-mostly and failfast.
	Local bool `json:"local"`
	// Stale is true for a leg that may hold writes of another runner (the
	// fencing epoch moved past it): it is wiped and resynced in full,
	// never re-added through the bitmap.
	Stale bool `json:"stale"`
}

// Disk is one mirrored disk of the guest; disk i of Host.Disks is /dev/md<i>.
type Disk struct {
	Name string `json:"name"`
	Legs []Leg  `json:"legs"`
}

// Host says who runs the guest now. A later Host replaces an earlier one.
// The fw_cfg file holds the same JSON (its "type" may be omitted).
type Host struct {
	Type  string `json:"type"`
	Guest string `json:"guest"`
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch"`
	Disks []Disk `json:"disks"`
	// NICs are the guest's network interfaces, found by MAC; the same on
	// every host.
	NICs []NIC `json:"nics,omitempty"`
}

// NIC is one network interface of the guest: its MAC, and the static
// address (with prefix length) the cluster file gives it, if any.
type NIC struct {
	Name    string `json:"name"`
	MAC     string `json:"mac"`
	Address string `json:"address,omitempty"`
}

// Check asks for a check scrub of one disk.
type Check struct {
	Type string `json:"type"`
	Disk string `json:"disk"`
}

// LegState is one leg in a State message.
type LegState struct {
	Node   string `json:"node,omitempty"`
	Serial string `json:"serial"`
	Dev    string `json:"dev,omitempty"` // vda…; empty when the leg's device is absent
	// State is md's word for a member (in_sync, spare while it recovers,
	// faulty), or "missing" (no device with the serial) or "out" (the
	// device is there but not in the array).
	State string   `json:"state"`
	Flags []string `json:"flags"` // write_mostly, failfast
}

// Leg states that are not md's own.
const (
	LegMissing = "missing"
	LegOut     = "out"
)

// State is an array's condition.
type State struct {
	Type          string     `json:"type"`
	Time          string     `json:"time"` // RFC 3339, nanoseconds
	Disk          string     `json:"disk"`
	MD            string     `json:"md"`          // md0…
	ArrayState    string     `json:"array_state"` // md's array_state; "inactive" when not running
	Degraded      int        `json:"degraded"`
	SyncAction    string     `json:"sync_action"`
	SyncCompleted string     `json:"sync_completed"`
	Progress      float64    `json:"progress"` // 0..1 of sync_completed, 0 when idle
	MismatchCnt   int64      `json:"mismatch_cnt"`
	ArrayBytes    int64      `json:"array_bytes"`
	Legs          []LegState `json:"legs"`
}

// Event is something that happened to a disk. Every event is also logged
// to the console.
type Event struct {
	Type        string `json:"type"`
	Time        string `json:"time"`
	Disk        string `json:"disk"`
	Event       string `json:"event"`
	Leg         string `json:"leg,omitempty"` // the leg's node, else its serial
	Detail      string `json:"detail"`
	DirtyBytes  int64  `json:"dirty_bytes,omitempty"`
	ResyncBytes int64  `json:"resync_bytes,omitempty"`
	ArrayBytes  int64  `json:"array_bytes,omitempty"`
}

// Timestamp formats t as the protocol's time fields.
func Timestamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// ErrUnknownType is wrapped by Decode's error for a message of a type the
// receiver does not know (the caller may log and go on: a newer host may
// send more).
var ErrUnknownType = errors.New("unknown message type")

// Decode parses one line: *Host, *Check, *State or *Event.
func Decode(line []byte) (any, error) {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(line, &head); err != nil {
		return nil, fmt.Errorf("guestraid message: %w", err)
	}
	var v any
	switch head.Type {
	case TypeHost:
		v = &Host{}
	case TypeCheck:
		v = &Check{}
	case TypeState:
		v = &State{}
	case TypeEvent:
		v = &Event{}
	default:
		return nil, fmt.Errorf("guestraid message type %q: %w", head.Type, ErrUnknownType)
	}
	if err := json.Unmarshal(line, v); err != nil {
		return nil, fmt.Errorf("guestraid %s message: %w", head.Type, err)
	}
	return v, nil
}

// ParseHost parses host info (the fw_cfg file or a --host-info file): a
// Host object whose "type" is "host" or absent. It checks what the guest
// relies on: a guest name, and legs with serials.
func ParseHost(b []byte) (*Host, error) {
	var h Host
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("host info: %w", err)
	}
	if h.Type != "" && h.Type != TypeHost {
		return nil, fmt.Errorf("host info: type %q, want %q", h.Type, TypeHost)
	}
	h.Type = TypeHost
	if err := h.Validate(); err != nil {
		return nil, err
	}
	return &h, nil
}

// Validate checks a host message.
func (h *Host) Validate() error {
	if h.Guest == "" {
		return errors.New("host info: no guest name")
	}
	seen := map[string]bool{}
	for i, d := range h.Disks {
		if d.Name == "" {
			return fmt.Errorf("host info: disk %d has no name", i)
		}
		if seen[d.Name] {
			return fmt.Errorf("host info: disk %s twice", d.Name)
		}
		seen[d.Name] = true
		if len(d.Legs) == 0 || len(d.Legs) > 2 {
			return fmt.Errorf("host info: disk %s has %d legs, want 1 or 2", d.Name, len(d.Legs))
		}
		for j, l := range d.Legs {
			if l.Serial == "" {
				return fmt.Errorf("host info: disk %s leg %d has no serial", d.Name, j)
			}
		}
		if len(d.Legs) == 2 && d.Legs[0].Serial == d.Legs[1].Serial {
			return fmt.Errorf("host info: disk %s: both legs have serial %s", d.Name, d.Legs[0].Serial)
		}
	}
	return nil
}

// DiskIndex is the index of disk name in h (its md number), or -1.
func (h *Host) DiskIndex(name string) int {
	for i, d := range h.Disks {
		if d.Name == name {
			return i
		}
	}
	return -1
}
