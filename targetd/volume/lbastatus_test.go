package volume

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/targetd/scsi"
)

// targetd hands volumes to the SCSI layer as they are: GET LBA STATUS
// finds Mapped through this interface.
var _ scsi.BlockMapper = (*Volume)(nil)

// TestFileVolumeMapped: a sparse file volume reports its holes and its
// data as the filesystem keeps them: all hole when new, data where written,
// a hole again where discarded; extents stop at limit and at the end.
func TestFileVolumeMapped(t *testing.T) {
	ctx := context.Background()
	b, _ := newFileBackend(t)
	const size = 8 * mib
	_, err := b.Create(ctx, "mhc-web1-root", size)
	require.NoError(t, err)
	v, err := b.Open(ctx, "mhc-web1-root")
	require.NoError(t, err)
	defer v.Close()

	mapped, n, err := v.Mapped(0, size)
	require.NoError(t, err)
	assert.False(t, mapped, "a new sparse volume is one hole (does this filesystem keep holes?)")
	assert.EqualValues(t, size, n)
	mapped, n, err = v.Mapped(mib, 100)
	require.NoError(t, err)
	assert.False(t, mapped)
	assert.EqualValues(t, 100, n, "capped at limit")

	_, err = v.WriteAt(make([]byte, 4096), mib) // zeroes written are still data
	require.NoError(t, err)
	mapped, n, err = v.Mapped(0, size)
	require.NoError(t, err)
	assert.False(t, mapped)
	assert.EqualValues(t, mib, n, "the hole before the write")
	mapped, n, err = v.Mapped(mib, size)
	require.NoError(t, err)
	assert.True(t, mapped)
	require.GreaterOrEqual(t, n, int64(4096), "the written block")
	require.Less(t, n, int64(size-mib))
	mapped, n2, err := v.Mapped(mib+n, size)
	require.NoError(t, err)
	assert.False(t, mapped)
	assert.EqualValues(t, size-mib-n, n2, "a hole after it, to the end")
	mapped, n, err = v.Mapped(mib+512, 1)
	require.NoError(t, err)
	assert.True(t, mapped, "inside the data")
	assert.EqualValues(t, 1, n)

	require.NoError(t, v.Discard(mib, 4096))
	mapped, n, err = v.Mapped(0, size)
	require.NoError(t, err)
	assert.False(t, mapped, "discarded: one hole again")
	assert.EqualValues(t, size, n)

	_, _, err = v.Mapped(size, 1)
	assert.ErrorIs(t, err, ErrOutOfRange)
	_, _, err = v.Mapped(-1, 1)
	assert.ErrorIs(t, err, ErrOutOfRange)
	_, _, err = v.Mapped(0, 0)
	assert.ErrorIs(t, err, ErrOutOfRange)
	require.NoError(t, v.Close())
	_, _, err = v.Mapped(0, 1)
	assert.ErrorIs(t, err, ErrClosed)
}
