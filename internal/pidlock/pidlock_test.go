package pidlock

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLockNamesTheHolder(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.lock")
	unlock, err := Lock(p)
	require.NoError(t, err)
	_, err = Lock(p)
	var busy *BusyError
	require.ErrorAs(t, err, &busy)
	assert.True(t, errors.Is(err, ErrBusy))
	assert.Equal(t, os.Getpid(), busy.PID)
	assert.Contains(t, err.Error(), p)
	unlock()
	unlock2, err := Lock(p)
	require.NoError(t, err, "free again after unlock")
	unlock2()
	_, err = Lock(filepath.Join(t.TempDir(), "missing", "x.lock"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}
