//go:build !vmtest

package volume

import (
	"fmt"
	"os"
	"testing"
)

// TestMain refuses to run the default build's tests when MHCODI_VM_LVM is
// set: whoever set it wants the LVM VM test, which only -tags vmtest
// compiles (see lvm_vm_test.go), and a green run without it would hide that
// LVM went untested.
func TestMain(m *testing.M) {
	if v := os.Getenv(vmEnv); v != "" {
		fmt.Fprintf(os.Stderr, "%s=%s is set, but the LVM VM test is only built with -tags vmtest:\n"+
			"  go test -tags vmtest -run '^TestLVMVM' ./targetd/volume/   (as root, with device-mapper: inside the test VM)\n", vmEnv, v)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
