package hypervisor

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mhcodi/mhcodi/configs"
)

// ChooseAccel turns hypervisor.accel into qemu's accelerator: "kvm" or
// "tcg" as given, and for "auto" KVM only when the CPU has hardware
// virtualisation (vmx or svm among cpuinfo's flags) and /dev/kvm opened
// (kvmOpens): either alone is not enough, a nested guest without vmx can
// still have /dev/kvm.
func ChooseAccel(setting string, cpuinfo []byte, kvmOpens bool) string {
	switch setting {
	case configs.AccelKVM, configs.AccelTCG:
		return setting
	}
	if kvmOpens && cpuHasVirt(cpuinfo) {
		return configs.AccelKVM
	}
	return configs.AccelTCG
}

func cpuHasVirt(cpuinfo []byte) bool {
	for _, line := range bytes.Split(cpuinfo, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || string(bytes.TrimSpace(k)) != "flags" {
			continue
		}
		for _, f := range bytes.Fields(v) {
			if string(f) == "vmx" || string(f) == "svm" {
				return true
			}
		}
	}
	return false
}

// esc doubles commas: qemu's option syntax reads ",," as a literal comma.
func esc(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// QEMUArgs is qemu's command line for spec (without the binary), pure.
//
// Choices that are not obvious:
//   - no -no-reboot: a reboot inside the guest stays a reboot, while a
//     power-off still ends qemu (no -no-shutdown), which is what Stop
//     waits for;
//   - -nodefaults: no default NIC, VGA, floppy or CD-ROM the guest did not
//     ask for;
//   - the disks come first on the PCI bus, in Drives order, so the guest's
//     kernel names them vda, vdb… in that order (guestraid still matches
//     them by serial, never by name);
//   - -daemonize: the guest outlives the command that started it; its
//     parent exits once the machine is set up, with qemu's error if it
//     could not be.
func QEMUArgs(spec GuestSpec, accel string, network, extra []string) []string {
	dir := spec.RunDir
	a := []string{
		"-name", "guest=" + esc(spec.Name) + ",debug-threads=on",
		"-machine", "q35",
		"-accel", accel,
	}
	if accel == configs.AccelKVM {
		a = append(a, "-cpu", "host")
	}
	a = append(a,
		"-m", strconv.FormatUint(spec.MemoryMiB, 10),
		"-smp", strconv.Itoa(spec.VCPUs),
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-msg", "timestamp=on",
		"-kernel", spec.Kernel,
		"-initrd", spec.Initramfs,
		"-append", spec.Cmdline,
		// The serial console is a socket one terminal at a time attaches
		// to (mhcodi guest console); qemu writes the log file whether or
		// not anyone is attached.
		"-chardev", "socket,id=console,path="+esc(filepath.Join(dir, ConsoleSocket))+",server=on,wait=off,logfile="+esc(filepath.Join(dir, ConsoleLog)),
		"-serial", "chardev:console",
		"-chardev", "socket,id=qmp,path="+esc(filepath.Join(dir, QMPSocket))+",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
	)
	for _, d := range spec.Drives("vd") {
		a = append(a, d.Args()...)
		a = append(a, "-device", d.DeviceArg(d.Dev))
	}
	a = append(a,
		"-device", "virtio-serial-pci,id=vser0",
		"-chardev", "socket,id=mhcchan,path="+esc(filepath.Join(dir, ChannelSocket))+",server=on,wait=off",
		"-device", "virtserialport,bus=vser0.0,chardev=mhcchan,name="+ChannelName,
	)
	if spec.HostInfo != nil {
		a = append(a, "-fw_cfg", "name="+HostInfoName+",file="+esc(filepath.Join(dir, HostInfoFile)))
	}
	// Each NIC is the tap the driver made on the node's bridge (Start,
	// before qemu), opened by name: no helper scripts run.
	for i, n := range spec.NICs {
		id := "net" + strconv.Itoa(i)
		a = append(a,
			"-netdev", "tap,id="+id+",ifname="+esc(n.Tap)+",script=no,downscript=no",
			"-device", "virtio-net-pci,netdev="+id+",mac="+n.MAC,
		)
	}
	switch {
	case network != nil:
		a = append(a, network...)
	case len(spec.NICs) == 0:
		a = append(a, "-nic", "none")
	}
	a = append(a, "-daemonize", "-pidfile", filepath.Join(dir, PIDFile))
	return append(a, extra...)
}

// checkSocketPaths refuses a run directory whose socket paths do not fit
// in a sockaddr_un (108 bytes with the NUL): qemu would fail with a less
// helpful message.
func checkSocketPaths(dir string) error {
	for _, f := range []string{QMPSocket, ChannelSocket, ConsoleSocket} {
		if p := filepath.Join(dir, f); len(p) > 107 {
			return fmt.Errorf("socket path %s is %d bytes, unix sockets allow 107; use a shorter hypervisor.run_dir", p, len(p))
		}
	}
	return nil
}
