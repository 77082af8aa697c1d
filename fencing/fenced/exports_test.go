package fenced

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/targetd/controlapi"
)

func TestDecideExportFences(t *testing.T) {
	exports := []controlapi.ExportInfo{
		{Guest: "web", Disk: "root", Fence: controlapi.FenceState{Owner: "iqn…node-a.initiator", Epoch: 2}},
		{Guest: "web", Disk: "data", Fence: controlapi.FenceState{Epoch: 3}},
		{Guest: "db", Disk: "root", Fence: controlapi.FenceState{Epoch: 5}},
		{Guest: "gone", Disk: "root"},
		{Guest: "new", Disk: "root"},
	}
	records := map[string]ledger.Record{
		"web": {Guest: "web", Owner: "node-b", Epoch: 3},
		"db":  {Guest: "db", Owner: "node-a", Epoch: 5},
		"new": {Guest: "new", Epoch: 0},
	}
	assert.Equal(t, []controlapi.FenceRequest{{Guest: "web", Disk: "root", Owner: "node-b", Epoch: 3}},
		DecideExportFences(exports, records, nil),
		"only the export behind the ledger: not one at the same epoch, not a guest without a record or an owner")
	assert.Empty(t, DecideExportFences(exports, records, map[string]bool{"web": true}),
		"a copy of web still runs here and writes its local leg: the new owner must not reach that leg yet")
}
