package image

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testKernel is the kernel scripts/deps.sh unpacked into the repository's
// .cache (or $MHCODI_CACHE).
func testKernel(t *testing.T) Kernel {
	t.Helper()
	dir := filepath.Join("..", "..", ".cache", "kernel")
	if c := os.Getenv("MHCODI_CACHE"); c != "" {
		dir = filepath.Join(c, "kernel")
	}
	k, err := ReadKernel(dir)
	require.NoError(t, err, "run `make deps`")
	return k
}

func TestKernelModulesResolveDependencies(t *testing.T) {
	k := testKernel(t)
	files, err := k.Modules([]string{"dm_mod", "loop", "virtio-blk"})
	require.NoError(t, err)
	for _, want := range []string{
		"kernel/drivers/md/dm-mod.ko", "kernel/drivers/block/loop.ko",
		"kernel/drivers/block/virtio_blk.ko", "kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_ring.ko",
	} {
		// Debian 12 ships plain .ko files; later kernels compress them.
		found := false
		for _, f := range files {
			found = found || strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(f, ".xz"), ".zst"), ".gz") == want
		}
		assert.True(t, found, "%s not in %v", want, files)
	}
	dep, err := k.ModulesDep(files)
	require.NoError(t, err)
	assert.Len(t, strings.Split(strings.TrimSpace(string(dep)), "\n"), len(files), "one modules.dep line per module file")

	_, err = k.Modules([]string{"no-such-module"})
	assert.ErrorContains(t, err, "no-such-module")
}

func TestReadKernelMissing(t *testing.T) {
	_, err := ReadKernel(t.TempDir())
	assert.ErrorIs(t, err, ErrNoKernel)
}

// TestKernelModulesFromModulesDep: a module's dependencies come from its
// modules.dep line (transitive, as modprobe reads it), a built-in module
// resolves to no file, and '-' and '_' are one.
func TestKernelModulesFromModulesDep(t *testing.T) {
	k := testKernel(t)
	files, err := k.Modules([]string{"iscsi-tcp"})
	require.NoError(t, err)
	for _, want := range []string{"iscsi_tcp", "libiscsi_tcp", "libiscsi", "scsi_transport_iscsi", "scsi_mod", "scsi_common"} {
		found := false
		for _, f := range files {
			found = found || moduleName(f) == want
		}
		assert.True(t, found, "%s not in %v", want, files)
	}
	builtin, err := readModulesBuiltin(filepath.Join(k.ModulesDir(), "modules.builtin"))
	require.NoError(t, err)
	require.NotEmpty(t, builtin)
	for name := range builtin {
		files, err := k.Modules([]string{name})
		require.NoError(t, err, name)
		assert.Empty(t, files, "built-in %s", name)
		break
	}
}
