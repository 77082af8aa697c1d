package vm_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mhcodi/mhcodi/test/vm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// checkImage is a guest whose job is vmcheck with args.
func checkImage(name string, args ...string) vm.Image {
	return vm.Image{
		Name:    name,
		Go:      []vm.GoBinary{{Package: "github.com/mhcodi/mhcodi/test/vm/internal/vmcheck"}},
		Modules: append([]string{"dm-mod", "loop"}, vm.VirtioBlk...),
		Job:     vm.Job{Argv: append([]string{"/bin/vmcheck"}, args...)},
	}
}

// TestBoot boots Debian's kernel with device-mapper, loop and a virtio disk
// and checks the guest sees them; it reports the boot time.
func TestBoot(t *testing.T) {
	disk := vm.DiskFile(t, "disk.img", 8<<20)

	res := vm.RunT(t, checkImage("vm-sanity",
		"-exists", "/dev/mapper/control", "-exists", "/dev/loop-control",
		"-module", "dm_mod", "-module", "loop",
		"-exists", "/sys/block/vda", "-contains", "/sys/block/vda/serial:mhc-test-disk",
		"-contains", "/proc/filesystems:tmpfs",
	), vm.Options{Disks: []vm.Disk{{Path: disk, Serial: "mhc-test-disk"}}})
	assert.Equal(t, 0, res.Status, "vmcheck failed in the guest")
	assert.Contains(t, res.Console, "vmcheck: ok: /dev/mapper/control exists")
	t.Logf("boot time (qemu start to job start): %s", res.Boot.Round(time.Millisecond))
}

// TestJobStatus checks a failing job's status comes back.
func TestJobStatus(t *testing.T) {
	res := vm.RunT(t, checkImage("vm-status", "-exists", "/no/such/file"), vm.Options{})
	assert.Equal(t, 1, res.Status)
	assert.Contains(t, res.Console, "vmcheck: FAIL: /no/such/file exists")
}

// TestTimeout checks that a run past its timeout fails with ErrTimeout and
// leaves no qemu behind.
func TestTimeout(t *testing.T) {
	res, err := vm.Run(t.Context(), checkImage("vm-timeout", "-sleep", "1h"), vm.Options{Timeout: 2 * time.Second})
	require.Error(t, err)
	assert.True(t, errors.Is(err, vm.ErrTimeout), err)
	require.NotNil(t, res)
	assert.Equal(t, -1, res.Status)
	assertGone(t, res.PID)
}

// assertGone checks that no process has pid any more (or that it is not
// qemu: the PID may have been reused).
func assertGone(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); err != nil {
		return
	}
	comm, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	assert.NotContains(t, strings.TrimSpace(string(comm)), "qemu", "qemu pid %d still runs", pid)
}
