package test

import (
	"testing"
	"time"

	"github.com/mhcodi/mhcodi/test/vm"
	"github.com/stretchr/testify/assert"
)

// lvmConf makes lvm2 work in an initramfs with no udev and no daemons:
// lvm and libdevmapper create the /dev nodes themselves, scan /dev
// directly, keep their locks under /run and write no metadata backups.
//
// retry_deactivation = 0: by default lvremove of an LV that another
// process holds open retries for about 5 s (for udev's transient opens)
// before it fails "in use"; the test does exactly that once, and there is
// no udev here. The result is the same, only sooner.
const lvmConf = `# test/vm guest: no udev, no daemons, no metadata backups
devices {
	obtain_device_list_from_udev = 0
	external_device_info_source = "none"
	use_devicesfile = 0
}
global {
	locking_dir = "/run/lock/lvm"
	event_activation = 0
	use_lvmpolld = 0
}
activation {
	udev_sync = 0
	udev_rules = 0
	monitoring = 0
	retry_deactivation = 0
}
backup {
	backup = 0
	archive = 0
}
`

// lvmCommands are the lvm2 commands the LVM backend and its VM test run,
// each a symlink to lvm (which dispatches on its name, as Debian installs
// them).
var lvmCommands = []string{
	"lvs", "vgs", "pvs", "lvcreate", "lvextend", "lvremove", "lvchange",
	"pvcreate", "pvremove", "vgcreate", "vgremove", "vgchange",
}

// TestLVMBackendInVM runs targetd/volume's LVM test (lvm_vm_test.go, build
// tag vmtest) for real: lvm2 on loop devices with device-mapper, inside a
// VM booting Debian's kernel, since this machine's kernel has neither.
func TestLVMBackendInVM(t *testing.T) {
	lvm := tool(t, "lvm")
	losetup := tool(t, "losetup")
	links := map[string]string{}
	for _, c := range lvmCommands {
		links["/sbin/"+c] = "lvm"
	}
	img := vm.Image{
		Name: "lvm-backend",
		Go:   []vm.GoBinary{{Package: "./targetd/volume", Test: true, Tags: []string{"vmtest"}, Dst: "/bin/volume.test"}},
		Files: []vm.HostFile{
			{Src: lvm, Dst: "/sbin/lvm"},
			{Src: losetup, Dst: "/sbin/losetup"},
		},
		Symlinks: links,
		Static:   []vm.StaticFile{{Path: "/etc/lvm/lvm.conf", Data: []byte(lvmConf)}},
		Modules:  []string{"dm-mod", "loop"},
		Dirs:     []string{"/run/lock/lvm", "/run/lvm"},
		Job: vm.Job{
			Argv: []string{"/bin/volume.test", "-test.run", "^TestLVMVM", "-test.v", "-test.count=1", "-test.timeout=3m"},
			// DM_DISABLE_UDEV: libdevmapper and lvm neither wait for nor
			// rely on udev, which the guest does not run.
			Env: []string{"MHCODI_VM_LVM=1", "DM_DISABLE_UDEV=1"},
			Dir: "/tmp",
		},
	}
	res := vm.RunT(t, img, vm.Options{Timeout: 5 * time.Minute})
	assert.Equal(t, 0, res.Status, "volume.test failed in the VM; its output is in %s", res.LogFile)
	for _, name := range []string{"TestLVMVM", "TestLVMVMStriped"} {
		assert.Contains(t, res.Console, "--- PASS: "+name+" ", "%s did not pass in the VM (%s)", name, res.LogFile)
	}
	if t.Failed() {
		t.Logf("guest console:\n%s", res.Console[max(0, len(res.Console)-6000):])
	}
}
