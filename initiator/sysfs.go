package initiator

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Sysfs reads the kernel's iSCSI sessions and their block devices. Both
// backends use it: the kernel is the truth about what is logged in
// (iscsid's records and iscsinl's memory are not), and it works without
// udev, where /dev/disk/by-path does not exist.
type Sysfs struct {
	// Root is where sysfs is mounted; default /sys. Tests point it at a
	// fake tree.
	Root string
	// Dev is where device nodes are; default /dev.
	Dev string
}

func (s Sysfs) root() string {
	if s.Root == "" {
		return "/sys"
	}
	return s.Root
}

func (s Sysfs) dev() string {
	if s.Dev == "" {
		return "/dev"
	}
	return s.Dev
}

// Sessions lists the kernel's iSCSI sessions with LUN 0's block device.
// No iSCSI transport loaded means no sessions.
func (s Sysfs) Sessions() ([]Session, error) {
	base := filepath.Join(s.root(), "class", "iscsi_session")
	ents, err := os.ReadDir(base)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing iSCSI sessions: %w", err)
	}
	var out []Session
	for _, e := range ents {
		id, err := strconv.Atoi(strings.TrimPrefix(e.Name(), "session"))
		if err != nil || !strings.HasPrefix(e.Name(), "session") {
			continue
		}
		dir := filepath.Join(base, e.Name())
		ses := Session{ID: id, Target: s.attr(dir, "targetname"), State: s.attr(dir, "state")}
		if ses.Target == "" || ses.Target == "(null)" {
			// Being created or torn down: not a session yet.
			continue
		}
		conn := filepath.Join(s.root(), "class", "iscsi_connection", fmt.Sprintf("connection%d:0", id))
		addr, port := s.attr(conn, "persistent_address"), s.attr(conn, "persistent_port")
		if addr == "" {
			addr, port = s.attr(conn, "address"), s.attr(conn, "port")
		}
		if addr != "" && port != "" {
			ses.Portal = joinHostPort(addr, port)
		}
		ses.Device = s.lun0(dir)
		out = append(out, ses)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// lun0 finds LUN 0's disk under a session:
// session/device/target<H:C:T>/<H:C:T:L>/block/<sdX>.
func (s Sysfs) lun0(sessionDir string) Device {
	blocks, _ := filepath.Glob(filepath.Join(sessionDir, "device", "target*", "*", "block", "*"))
	sort.Strings(blocks)
	for _, b := range blocks {
		sdev := filepath.Dir(filepath.Dir(b)) // the H:C:T:L directory
		hctl := strings.Split(filepath.Base(sdev), ":")
		if len(hctl) != 4 || hctl[3] != "0" {
			continue
		}
		name := filepath.Base(b)
		return Device{Path: filepath.Join(s.dev(), name), Name: name, Serial: readVPD80(filepath.Join(sdev, "vpd_pg80"))}
	}
	return Device{}
}

// SetRecoveryTimeout sets a session's recovery_tmo: how long the kernel
// queues I/O on a lost connection before failing it (what open-iscsi's
// replacement_timeout sets; iscsinl never sets it, leaving 120 s).
func (s Sysfs) SetRecoveryTimeout(id int, seconds int) error {
	p := filepath.Join(s.root(), "class", "iscsi_session", fmt.Sprintf("session%d", id), "recovery_tmo")
	if err := os.WriteFile(p, []byte(strconv.Itoa(seconds)), 0o644); err != nil {
		return fmt.Errorf("setting recovery_tmo of session %d: %w", id, err)
	}
	return nil
}

// SerialOf reads the VPD 0x80 unit serial of a disk (sdX).
func (s Sysfs) SerialOf(name string) string {
	return readVPD80(filepath.Join(s.root(), "block", name, "device", "vpd_pg80"))
}

func (s Sysfs) attr(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// readVPD80 parses the Unit Serial Number page (SPC-4 §7.8.16) the kernel
// keeps in vpd_pg80: a 4-byte header whose bytes 2-3 are the length, then
// the serial, maybe padded with spaces.
func readVPD80(p string) string {
	b, err := os.ReadFile(p)
	if err != nil || len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := int(b[2])<<8 | int(b[3])
	if 4+n > len(b) {
		n = len(b) - 4
	}
	return strings.TrimSpace(strings.TrimRight(string(b[4:4+n]), "\x00"))
}

func joinHostPort(addr, port string) string {
	if strings.Contains(addr, ":") {
		return "[" + addr + "]:" + port
	}
	return addr + ":" + port
}
