package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
)

const mib = 1 << 20

var quiet = slog.New(slog.DiscardHandler)

func newFileBackend(t *testing.T) (*FileBackend, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "volumes")
	b, err := NewFile(dir, quiet)
	require.NoError(t, err)
	return b, dir
}

// blocks is the number of 512-byte blocks allocated to path.
func blocks(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(path, &st))
	return st.Blocks
}

func TestFileCreateSparse(t *testing.T) {
	ctx := context.Background()
	b, dir := newFileBackend(t)
	created, err := b.Create(ctx, "mhc-web1-root", 64*mib)
	require.NoError(t, err)
	assert.True(t, created)

	dst, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), dst.Mode().Perm(), "the directory is created private")
	p := filepath.Join(dir, "mhc-web1-root")
	st, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	assert.Equal(t, int64(64*mib), st.Size())
	assert.Zero(t, blocks(t, p), "a new volume allocates nothing")

	in, err := b.Stat(ctx, "mhc-web1-root")
	require.NoError(t, err)
	assert.Equal(t, Info{Name: "mhc-web1-root", Path: p, Size: 64 * mib}, in)
}

func TestFileCreateIdempotent(t *testing.T) {
	ctx := context.Background()
	b, dir := newFileBackend(t)
	_, err := b.Create(ctx, "mhc-web1-root", 8*mib)
	require.NoError(t, err)
	v, err := b.Open(ctx, "mhc-web1-root")
	require.NoError(t, err)
	_, err = v.WriteAt([]byte("keep me"), 4096)
	require.NoError(t, err)
	require.NoError(t, v.Close())

	created, err := b.Create(ctx, "mhc-web1-root", 8*mib)
	require.NoError(t, err, "same size again is a no-op")
	assert.False(t, created)
	data, err := os.ReadFile(filepath.Join(dir, "mhc-web1-root"))
	require.NoError(t, err)
	assert.Equal(t, []byte("keep me"), data[4096:4096+7], "the no-op create kept the data")

	created, err = b.Create(ctx, "mhc-web1-root", 16*mib)
	require.ErrorIs(t, err, ErrWrongSize)
	assert.False(t, created)
	assert.EqualError(t, err, "volume mhc-web1-root: exists with another size: it has 8M (8388608 bytes), the request is 16M (16777216 bytes)")
}

func TestFileCreateFinishesEmptyFile(t *testing.T) {
	ctx := context.Background()
	b, dir := newFileBackend(t)
	require.NoError(t, os.MkdirAll(dir, 0o700))
	p := filepath.Join(dir, "mhc-web1-root")
	require.NoError(t, os.WriteFile(p, nil, 0o600)) // a create cut short before ftruncate
	created, err := b.Create(ctx, "mhc-web1-root", 4*mib)
	require.NoError(t, err)
	assert.False(t, created)
	in, err := b.Stat(ctx, "mhc-web1-root")
	require.NoError(t, err)
	assert.Equal(t, int64(4*mib), in.Size)
}

func TestFileFailedCreateLeavesNothing(t *testing.T) {
	ctx := context.Background()
	b, dir := newFileBackend(t)
	_, err := b.Create(ctx, "mhc-web1-root", 1<<62) // beyond any filesystem's file size limit
	require.Error(t, err)
	assert.Contains(t, err.Error(), "volume mhc-web1-root: sizing ")
	_, err = os.Stat(filepath.Join(dir, "mhc-web1-root"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestFileBadSizes(t *testing.T) {
	ctx := context.Background()
	b, _ := newFileBackend(t)
	for _, size := range []int64{0, -512, 1000} {
		_, err := b.Create(ctx, "mhc-web1-root", size)
		assert.ErrorContains(t, err, "is not a positive multiple of 512", size)
	}
}

func TestFileNameValidation(t *testing.T) {
	ctx := context.Background()
	b, dir := newFileBackend(t)
	outside := filepath.Join(filepath.Dir(dir), "outside")
	require.NoError(t, os.WriteFile(outside, []byte("x"), 0o600))
	for _, name := range []string{
		"", "web1-root", "mhc-", "mhc-web1", "mhc-Web1-root", "mhc-web1-root/..", "../outside",
		"mhc-../outside", "mhc-a-../../outside", "mhc-web1-root\x00", "mhc-a-b/c", "/etc/passwd", "-mhc-a-b", "mhc-a-.",
	} {
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			_, err := b.Create(ctx, name, mib)
			assert.ErrorIs(t, err, ErrInvalidName)
			_, err = b.Open(ctx, name)
			assert.ErrorIs(t, err, ErrInvalidName)
			_, err = b.Stat(ctx, name)
			assert.ErrorIs(t, err, ErrInvalidName)
			assert.ErrorIs(t, b.Extend(ctx, name, 2*mib), ErrInvalidName)
			assert.ErrorIs(t, b.Remove(ctx, name), ErrInvalidName)
		})
	}
	_, err := os.Stat(outside)
	assert.NoError(t, err, "nothing outside the directory was touched")
	for _, name := range []string{"mhc-a-b", "mhc-web1-root", "mhc-a-b-c", "mhc-x9-d0"} {
		assert.NoError(t, ValidName(name), name)
	}
}

func TestFileRefusesSymlink(t *testing.T) {
	ctx := context.Background()
	b, dir := newFileBackend(t)
	require.NoError(t, os.MkdirAll(dir, 0o700))
	target := filepath.Join(t.TempDir(), "precious")
	require.NoError(t, os.WriteFile(target, make([]byte, mib), 0o600))
	require.NoError(t, os.Symlink(target, filepath.Join(dir, "mhc-web1-root")))

	_, err := b.Create(ctx, "mhc-web1-root", mib)
	assert.ErrorContains(t, err, "is a symbolic link")
	_, err = b.Open(ctx, "mhc-web1-root")
	assert.ErrorContains(t, err, "is a symbolic link")
	assert.ErrorContains(t, b.Remove(ctx, "mhc-web1-root"), "is a symbolic link")
	list, err := b.List(ctx)
	require.NoError(t, err)
	assert.Empty(t, list, "a symlink is not a volume")
	_, err = os.Stat(target)
	assert.NoError(t, err)
}

func TestFileReadWriteDiscard(t *testing.T) {
	ctx := context.Background()
	b, dir := newFileBackend(t)
	_, err := b.Create(ctx, "mhc-web1-root", 8*mib)
	require.NoError(t, err)
	v, err := b.Open(ctx, "mhc-web1-root")
	require.NoError(t, err)
	defer v.Close()
	assert.Equal(t, "mhc-web1-root", v.Name())
	assert.Equal(t, filepath.Join(dir, "mhc-web1-root"), v.Path())
	assert.Equal(t, int64(8*mib), v.Size())
	assert.True(t, v.DiscardZeroes())

	data := bytes.Repeat([]byte{0xab}, 2*mib)
	n, err := v.WriteAt(data, mib)
	require.NoError(t, err)
	assert.Equal(t, len(data), n)
	require.NoError(t, v.Sync())
	written := blocks(t, v.Path())
	assert.GreaterOrEqual(t, written, int64(2*mib/512), "the write allocated its blocks")

	require.NoError(t, v.Discard(mib, 2*mib))
	assert.Less(t, blocks(t, v.Path()), written/16, "the discard gave the blocks back")
	got := make([]byte, 2*mib)
	_, err = v.ReadAt(got, mib)
	require.NoError(t, err)
	assert.Equal(t, make([]byte, 2*mib), got, "a discarded range reads back as zeroes")
	assert.Equal(t, int64(8*mib), v.Size(), "discard keeps the size")

	// A partial discard zeroes exactly its range.
	_, err = v.WriteAt(bytes.Repeat([]byte{1}, 4096), 0)
	require.NoError(t, err)
	require.NoError(t, v.Discard(1024, 1024))
	got = make([]byte, 4096)
	_, err = v.ReadAt(got, 0)
	require.NoError(t, err)
	want := bytes.Repeat([]byte{1}, 4096)
	copy(want[1024:2048], make([]byte, 1024))
	assert.Equal(t, want, got)
}

func TestFileBounds(t *testing.T) {
	ctx := context.Background()
	b, _ := newFileBackend(t)
	_, err := b.Create(ctx, "mhc-web1-root", mib)
	require.NoError(t, err)
	v, err := b.Open(ctx, "mhc-web1-root")
	require.NoError(t, err)
	defer v.Close()

	_, err = v.WriteAt(make([]byte, 512), mib)
	assert.ErrorIs(t, err, ErrOutOfRange, "a write past the end must not grow the file")
	_, err = v.WriteAt(make([]byte, 1024), mib-512)
	assert.ErrorIs(t, err, ErrOutOfRange)
	_, err = v.WriteAt(make([]byte, 1), -1)
	assert.ErrorIs(t, err, ErrOutOfRange)
	assert.ErrorIs(t, v.Discard(mib-512, 1024), ErrOutOfRange)
	st, err := os.Stat(v.Path())
	require.NoError(t, err)
	assert.Equal(t, int64(mib), st.Size())

	n, err := v.ReadAt(make([]byte, 1024), mib-512)
	assert.Equal(t, 512, n)
	assert.ErrorIs(t, err, io.EOF, "a read across the end is short, with io.EOF")
	n, err = v.ReadAt(make([]byte, 10), mib)
	assert.Zero(t, n)
	assert.ErrorIs(t, err, io.EOF)
	_, err = v.ReadAt(make([]byte, 10), mib+1)
	assert.ErrorIs(t, err, ErrOutOfRange)
}

func TestWriteZeroes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(p, bytes.Repeat([]byte{7}, 3<<20), 0o600))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, writeZeroes(f, 1000, 2<<20+5))
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	want := bytes.Repeat([]byte{7}, 3<<20)
	copy(want[1000:], make([]byte, 2<<20+5))
	assert.Equal(t, want, got)
}

func TestFileConcurrentIO(t *testing.T) {
	ctx := context.Background()
	b, _ := newFileBackend(t)
	const block, nblocks, workers = 4096, 256, 8
	_, err := b.Create(ctx, "mhc-web1-root", block*nblocks)
	require.NoError(t, err)
	v, err := b.Open(ctx, "mhc-web1-root")
	require.NoError(t, err)
	defer v.Close()

	// Each worker owns the blocks i with i%workers == w, writes a pattern
	// naming the block and reads it back, while the others do the same
	// next to it.
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			buf, got := make([]byte, block), make([]byte, block)
			for range 200 {
				i := rng.IntN(nblocks/workers)*workers + w
				for j := range buf {
					buf[j] = byte(i + j)
				}
				if _, err := v.WriteAt(buf, int64(i*block)); err != nil {
					errs <- err
					return
				}
				if _, err := v.ReadAt(got, int64(i*block)); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, got) {
					errs <- fmt.Errorf("block %d read back different data", i)
					return
				}
				_ = v.Size()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestFileExtend(t *testing.T) {
	ctx := context.Background()
	b, _ := newFileBackend(t)
	_, err := b.Create(ctx, "mhc-web1-root", 4*mib)
	require.NoError(t, err)
	v, err := b.Open(ctx, "mhc-web1-root")
	require.NoError(t, err)
	defer v.Close()

	require.NoError(t, b.Extend(ctx, "mhc-web1-root", 8*mib))
	assert.Equal(t, int64(4*mib), v.Size(), "an open volume keeps its size until told")
	_, err = v.WriteAt([]byte{1}, 6*mib)
	assert.ErrorIs(t, err, ErrOutOfRange)
	n, err := v.Refresh()
	require.NoError(t, err)
	assert.Equal(t, int64(8*mib), n)
	assert.Equal(t, int64(8*mib), v.Size())
	_, err = v.WriteAt([]byte{1}, 6*mib)
	assert.NoError(t, err)
	assert.Less(t, blocks(t, v.Path()), int64(64), "growing allocates nothing")

	require.NoError(t, b.Extend(ctx, "mhc-web1-root", 8*mib), "the same size is a no-op")
	err = b.Extend(ctx, "mhc-web1-root", 2*mib)
	require.ErrorIs(t, err, ErrShrink)
	assert.EqualError(t, err, "volume mhc-web1-root: volumes never shrink: it has 8M (8388608 bytes) and 2M (2097152 bytes) would cut off the end of the guest's disk")
	assert.ErrorIs(t, b.Extend(ctx, "mhc-web1-gone", 8*mib), ErrNotFound)
}

func TestFileRemove(t *testing.T) {
	ctx := context.Background()
	b, dir := newFileBackend(t)
	_, err := b.Create(ctx, "mhc-web1-root", mib)
	require.NoError(t, err)
	v, err := b.Open(ctx, "mhc-web1-root")
	require.NoError(t, err)
	v2, err := b.Open(ctx, "mhc-web1-root")
	require.NoError(t, err, "a volume may be opened twice")

	err = b.Remove(ctx, "mhc-web1-root")
	require.ErrorIs(t, err, ErrInUse)
	assert.ErrorContains(t, err, "open in this process (2 times)")
	require.NoError(t, v.Close())
	require.NoError(t, v.Close(), "Close twice is harmless")
	assert.ErrorIs(t, b.Remove(ctx, "mhc-web1-root"), ErrInUse, "still open once")
	require.NoError(t, v2.Close())

	// Another process (here: another backend on the same directory, which
	// shares no state with this one) holding it open is seen through the
	// file lock.
	other, err := NewFile(dir, quiet)
	require.NoError(t, err)
	v3, err := other.Open(ctx, "mhc-web1-root")
	require.NoError(t, err)
	err = b.Remove(ctx, "mhc-web1-root")
	require.ErrorIs(t, err, ErrInUse)
	assert.ErrorContains(t, err, "another process has it open")
	require.NoError(t, v3.Close())

	require.NoError(t, b.Remove(ctx, "mhc-web1-root"))
	_, err = os.Stat(filepath.Join(dir, "mhc-web1-root"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.ErrorIs(t, b.Remove(ctx, "mhc-web1-root"), ErrNotFound)
	_, err = b.Open(ctx, "mhc-web1-root")
	assert.ErrorIs(t, err, ErrNotFound)

	// I/O on a closed volume fails cleanly.
	_, err = v.ReadAt(make([]byte, 512), 0)
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, v.Sync(), ErrClosed)
	assert.ErrorIs(t, v.Discard(0, 512), ErrClosed)
}

func TestFileList(t *testing.T) {
	ctx := context.Background()
	b, dir := newFileBackend(t)
	list, err := b.List(ctx)
	require.NoError(t, err, "a directory not made yet holds no volumes")
	assert.Empty(t, list)

	for _, n := range []string{"mhc-web1-root", "mhc-db1-data"} {
		_, err := b.Create(ctx, n, 2*mib)
		require.NoError(t, err)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "mhc-Bad-name"), nil, 0o600))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "mhc-a-dir"), 0o700))
	list, err = b.List(ctx)
	require.NoError(t, err)
	assert.Equal(t, []Info{
		{Name: "mhc-db1-data", Path: filepath.Join(dir, "mhc-db1-data"), Size: 2 * mib},
		{Name: "mhc-web1-root", Path: filepath.Join(dir, "mhc-web1-root"), Size: 2 * mib},
	}, list)
}

func TestNew(t *testing.T) {
	b, err := New(configs.Storage{Backend: configs.BackendFile, File: configs.FileStorage{Dir: "/srv/x/"}})
	require.NoError(t, err)
	assert.Equal(t, configs.BackendFile, b.Kind())
	assert.Equal(t, "/srv/x", b.Where())

	b, err = New(configs.Storage{Backend: configs.BackendLVM, LVM: configs.LVMStorage{VG: "vg0", Stripes: 2}}, WithRunner(&fakeRunner{}))
	require.NoError(t, err)
	assert.Equal(t, configs.BackendLVM, b.Kind())
	assert.Equal(t, "volume group vg0", b.Where())

	_, err = New(configs.Storage{Backend: "zfs"})
	assert.ErrorContains(t, err, `storage backend "zfs" is not one of "lvm", "file"`)
	_, err = New(configs.Storage{Backend: configs.BackendLVM, LVM: configs.LVMStorage{VG: "--all"}})
	assert.ErrorContains(t, err, "is not a volume group name")
	_, err = New(configs.Storage{Backend: configs.BackendFile})
	assert.Error(t, err)
}

func TestErrorsAreWrapped(t *testing.T) {
	b, _ := newFileBackend(t)
	_, err := b.Open(context.Background(), "mhc-web1-root")
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrNotFound))
	assert.Contains(t, err.Error(), "volume mhc-web1-root: no such volume in ")
}
