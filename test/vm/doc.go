// Package vm runs tests that need kernel features the build machine lacks
// (device-mapper, md, loop, iSCSI) inside a throw-away VM: Debian's kernel,
// fetched by scripts/deps.sh into .cache/kernel, booted by
// qemu-system-x86_64 under TCG (KVM hangs on the build machine) with a
// u-root initramfs built here.
//
// An Image names what goes into the initramfs: Go packages or test
// binaries (built with CGO_ENABLED=0), files of this machine with their
// shared libraries (/sbin/lvm, /sbin/mdadm…), kernel modules by name
// (resolved with the kernel's modules.dep, dependencies included),
// configuration files, and the Job to run. Build assembles it with
// mkuimage: u-root's init as /init and this package's uinit, which
// mounts /proc, /sys, /dev, /tmp and /run, loads the modules with u-root's
// kmodule, runs the job on the serial console, prints
//
//	MHCODI-VM-EXIT <nonce> <status>
//
// and powers off. Images are cached in .cache/vm/images under a hash of
// their content, so only the Go builds run again when nothing changed.
//
// Run boots an image and returns the job's exit status and the console
// (also written to .cache/vm/logs/<name>.log). qemu is started in its own
// process group, dies with this process (PDEATHSIG), and is killed by its
// PID when the timeout expires, the context ends, or SIGINT/SIGTERM
// arrives; the temp files of a run are removed in every case.
//
//	res := vm.RunT(t, vm.Image{
//		Name:    "lvm",
//		Go:      []vm.GoBinary{{Package: "./targetd/volume", Test: true, Tags: []string{"vmtest"}}},
//		Files:   []vm.HostFile{{Src: "/sbin/lvm"}},
//		Modules: []string{"dm-mod", "loop"},
//		Job:     vm.Job{Argv: []string{"/bin/volume.test", "-test.v"}},
//	}, vm.Options{})
//	assert.Equal(t, 0, res.Status)
//
// Disks (files, attached as virtio-blk) and a network (Options.Network,
// qemu's -nic/-netdev arguments) are options of the run, not the image.
package vm
