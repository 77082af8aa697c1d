package ledger

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)

func TestClaimRaisesEpochAndMarksStale(t *testing.T) {
	r := Record{Guest: "web1"}
	require.NoError(t, Claim(&r, "node-a", "node-a", "start", nil, t0))
	assert.Equal(t, Record{Guest: "web1", Owner: "node-a", Epoch: 1, Desired: DesiredRunning, Updated: t0, By: "node-a", Why: "start"}, r)

	// node-a is down: a forced failover to node-b marks node-a's leg at 2.
	require.NoError(t, Claim(&r, "node-b", "node-b", "forced failover", []string{"node-a"}, t0.Add(time.Minute)))
	assert.Equal(t, uint64(2), r.Epoch)
	assert.Equal(t, "node-b", r.Owner)
	assert.Equal(t, map[string]uint64{"node-a": 2}, r.Stale)
	assert.Equal(t, "forced failover", r.Why)

	// Back to node-c while node-a is still stale and node-d unreachable:
	// node-a's earlier mark stays, node-d gets the new epoch.
	require.NoError(t, Claim(&r, "node-c", "node-c", "failover", []string{"node-d"}, t0.Add(2*time.Minute)))
	assert.Equal(t, map[string]uint64{"node-a": 2, "node-d": 3}, r.Stale)

	// A node marked again takes the newer epoch: it missed the newer
	// runner's writes too.
	require.NoError(t, Claim(&r, "node-b", "node-b", "failover", []string{"node-a"}, t0.Add(3*time.Minute)))
	assert.Equal(t, map[string]uint64{"node-a": 4, "node-d": 3}, r.Stale)
	assert.Equal(t, map[string]bool{"node-a": true, "node-d": true}, r.StaleLegs())
}

func TestClaimRefusesBadNamesAndLeavesRecord(t *testing.T) {
	for _, tc := range []struct {
		name, guest, owner, by string
		stale                  []string
	}{
		{"guest", "Web1", "node-a", "node-a", nil},
		{"empty guest", "", "node-a", "node-a", nil},
		{"owner", "web1", "node_a", "node-a", nil},
		{"empty owner", "web1", "", "node-a", nil},
		{"by", "web1", "node-a", "", nil},
		{"stale", "web1", "node-a", "node-a", []string{"node-b", "-x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Record{Guest: tc.guest, Epoch: 7, Owner: "node-z", Desired: DesiredStopped}
			before := r
			err := Claim(&r, tc.owner, tc.by, "start", tc.stale, t0)
			require.ErrorIs(t, err, ErrInvalid)
			assert.Equal(t, before, r)
		})
	}
}

func TestSetDesired(t *testing.T) {
	r := Record{Guest: "web1", Owner: "node-a", Epoch: 3, Desired: DesiredRunning}
	require.NoError(t, SetDesired(&r, DesiredStopped, "node-b", "stop", t0))
	assert.Equal(t, Record{Guest: "web1", Owner: "node-a", Epoch: 3, Desired: DesiredStopped, Updated: t0, By: "node-b", Why: "stop"}, r)

	err := SetDesired(&r, "paused", "node-b", "pause", t0.Add(time.Second))
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), `"paused"`)
	assert.Equal(t, DesiredStopped, r.Desired)
	assert.Equal(t, t0, r.Updated)
}

func TestClearStale(t *testing.T) {
	r := Record{Guest: "web1", Stale: map[string]uint64{"node-a": 4, "node-b": 2}}
	// A resync done under epoch 3 predates node-a's mark at 4.
	assert.False(t, ClearStale(&r, "node-a", 3))
	assert.False(t, ClearStale(&r, "node-c", 9))
	assert.True(t, ClearStale(&r, "node-b", 3))
	assert.Equal(t, map[string]uint64{"node-a": 4}, r.Stale)
	assert.True(t, ClearStale(&r, "node-a", 4))
	assert.Nil(t, r.Stale)
	b, err := json.Marshal(r)
	require.NoError(t, err)
	assert.NotContains(t, string(b), "stale")
}

func TestValidate(t *testing.T) {
	ok := Record{Guest: "web1", Desired: DesiredStopped}
	require.NoError(t, Validate(ok))
	ok.Owner, ok.By, ok.Stale = "node-a", "node-a", map[string]uint64{"node-b": 1}
	require.NoError(t, Validate(ok))

	for name, r := range map[string]Record{
		"no desired":  {Guest: "web1"},
		"bad guest":   {Guest: "web 1", Desired: DesiredRunning},
		"bad owner":   {Guest: "web1", Owner: "A", Desired: DesiredRunning},
		"bad by":      {Guest: "web1", By: "b.c", Desired: DesiredRunning},
		"bad stale":   {Guest: "web1", Desired: DesiredRunning, Stale: map[string]uint64{"": 1}},
		"bad desired": {Guest: "web1", Desired: "Running"},
	} {
		assert.ErrorIs(t, Validate(r), ErrInvalid, name)
	}
}
