package md

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Array is an md array as md sysfs shows it.
type Array struct {
	Name          string // md0
	Running       bool   // /sys/block/<name>/md exists and array_state is not clear/inactive
	ArrayState    string
	Degraded      int
	RaidDisks     int
	SyncAction    string
	SyncCompleted string
	MismatchCnt   int64
	Bytes         int64
	BitmapChunk   int64 // bytes; 0 without a bitmap
	Members       []Member
}

// Member is one rdev of an array (dev-<name>).
type Member struct {
	Dev   string   // vda
	Slot  int      // -1 for none (spare, faulty)
	State []string // md's words: in_sync, faulty, write_mostly, failfast, spare…
}

// Has says whether the member's state has word.
func (m Member) Has(word string) bool {
	for _, w := range m.State {
		if w == word {
			return true
		}
	}
	return false
}

// Member finds dev among the array's members.
func (a *Array) Member(dev string) (Member, bool) {
	for _, m := range a.Members {
		if m.Dev == dev {
			return m, true
		}
	}
	return Member{}, false
}

// Sysfs reads and writes md and block sysfs under Root ("/sys").
type Sysfs struct{ Root string }

func readTrim(p string) (string, error) {
	b, err := os.ReadFile(p)
	return strings.TrimSpace(string(b)), err
}

// Array reads /sys/block/<name>/md. A missing or stopped array is
// Running: false with no error.
func (s Sysfs) Array(name string) (Array, error) {
	a := Array{Name: name, ArrayState: "inactive", SyncAction: "idle", SyncCompleted: "none"}
	dir := filepath.Join(s.Root, "block", name, "md")
	st, err := readTrim(filepath.Join(dir, "array_state"))
	if errors.Is(err, os.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return a, fmt.Errorf("md %s: %w", name, err)
	}
	a.ArrayState = st
	if st == "clear" || st == "inactive" {
		return a, nil
	}
	a.Running = true
	ints := map[string]*int{"degraded": &a.Degraded, "raid_disks": &a.RaidDisks}
	for f, p := range ints {
		v, err := readTrim(filepath.Join(dir, f))
		if err != nil {
			return a, fmt.Errorf("md %s: %w", name, err)
		}
		if *p, err = strconv.Atoi(v); err != nil {
			return a, fmt.Errorf("md %s: %s %q: %w", name, f, v, err)
		}
	}
	if a.SyncAction, err = readTrim(filepath.Join(dir, "sync_action")); err != nil {
		return a, fmt.Errorf("md %s: %w", name, err)
	}
	if a.SyncCompleted, err = readTrim(filepath.Join(dir, "sync_completed")); err != nil {
		return a, fmt.Errorf("md %s: %w", name, err)
	}
	if v, err := readTrim(filepath.Join(dir, "mismatch_cnt")); err == nil {
		a.MismatchCnt, _ = strconv.ParseInt(v, 10, 64)
	}
	if v, err := readTrim(filepath.Join(s.Root, "block", name, "size")); err == nil {
		n, _ := strconv.ParseInt(v, 10, 64)
		a.Bytes = n * 512
	}
	if v, err := readTrim(filepath.Join(dir, "bitmap", "chunksize")); err == nil {
		a.BitmapChunk, _ = strconv.ParseInt(v, 10, 64)
	}
	devs, err := filepath.Glob(filepath.Join(dir, "dev-*"))
	if err != nil {
		return a, err
	}
	sort.Strings(devs)
	for _, d := range devs {
		m := Member{Dev: strings.TrimPrefix(filepath.Base(d), "dev-"), Slot: -1}
		st, err := readTrim(filepath.Join(d, "state"))
		if err != nil {
			continue // removed while we looked
		}
		m.State = strings.Split(st, ",")
		if v, err := readTrim(filepath.Join(d, "slot")); err == nil && v != "none" {
			if n, err := strconv.Atoi(v); err == nil {
				m.Slot = n
			}
		}
		a.Members = append(a.Members, m)
	}
	return a, nil
}

// Serials maps virtio-blk serials to device names (/sys/block/vd*/serial).
func (s Sysfs) Serials() (map[string]string, error) {
	matches, err := filepath.Glob(filepath.Join(s.Root, "block", "vd*", "serial"))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, m := range matches {
		v, err := readTrim(m)
		if err != nil || v == "" {
			continue
		}
		out[v] = filepath.Base(filepath.Dir(m))
	}
	return out, nil
}

// BlockDevs lists the virtio-blk devices (vd*, whole disks).
func (s Sysfs) BlockDevs() ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(s.Root, "block", "vd*"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range matches {
		out = append(out, filepath.Base(m))
	}
	sort.Strings(out)
	return out, nil
}

// WriteSectors is the number of 512-byte sectors written to dev since
// boot (/sys/block/<dev>/stat, field 7).
func (s Sysfs) WriteSectors(dev string) (uint64, error) {
	v, err := readTrim(filepath.Join(s.Root, "block", dev, "stat"))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(v)
	if len(f) < 7 {
		return 0, fmt.Errorf("%s stat: %d fields", dev, len(f))
	}
	return strconv.ParseUint(f[6], 10, 64)
}

// DevBytes is a block device's size (/sys/block/<dev>/size).
func (s Sysfs) DevBytes(dev string) (int64, error) {
	v, err := readTrim(filepath.Join(s.Root, "block", dev, "size"))
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n * 512, err
}

// SetDevState writes word (writemostly, -writemostly, failfast,
// -failfast, remove, faulty…) to an array member's state.
func (s Sysfs) SetDevState(md, dev, word string) error {
	p := filepath.Join(s.Root, "block", md, "md", "dev-"+dev, "state")
	if err := os.WriteFile(p, []byte(word), 0); err != nil {
		return fmt.Errorf("%s %s: writing %q to state: %w", md, dev, word, err)
	}
	return nil
}

// SetSyncAction writes action (check, repair, idle…) to sync_action.
func (s Sysfs) SetSyncAction(md, action string) error {
	p := filepath.Join(s.Root, "block", md, "md", "sync_action")
	if err := os.WriteFile(p, []byte(action), 0); err != nil {
		return fmt.Errorf("%s: writing %q to sync_action: %w", md, action, err)
	}
	return nil
}
