package fenced

import (
	"context"
	"time"

	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/targetd/controlapi"
)

// DecideExportFences says which of this node's exports lag behind the
// ledger: a leg whose guest the ledger gives a newer epoch than the one
// its targetd was last fenced at. That happens to a node that was
// unreachable when the guest moved (its legs were marked stale instead of
// fenced): once it is back, its targetd still admits only the old owner,
// and the new owner could never reach the leg to resync it. The ledger,
// read with quorum, is the authority, so the export simply catches up.
//
// Not while a copy of the guest still runs here (held back: running on
// this node, owned by another). That copy writes its local leg directly,
// not through targetd, so opening the leg to the new owner then would let
// the new owner's resync and the old copy write the same blocks; the
// monitor destroys the copy first, and the next round catches up.
func DecideExportFences(exports []controlapi.ExportInfo, records map[string]ledger.Record, heldBack map[string]bool) []controlapi.FenceRequest {
	var out []controlapi.FenceRequest
	for _, e := range exports {
		r, ok := records[e.Guest]
		if !ok || r.Owner == "" || r.Epoch <= e.Fence.Epoch || heldBack[e.Guest] {
			continue
		}
		out = append(out, controlapi.FenceRequest{Guest: e.Guest, Disk: e.Disk, Owner: r.Owner, Epoch: r.Epoch})
	}
	return out
}

// fenceExports brings the local targetd's fencing up to the ledger,
// except for the guests in heldBack (see DecideExportFences).
func (s *Server) fenceExports(ctx context.Context, records map[string]ledger.Record, heldBack map[string]bool) {
	if s.targetd == nil {
		return
	}
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	exports, err := s.targetd.Exports(tctx)
	if err != nil {
		s.log.Warn("monitor: cannot list targetd's exports", "err", err)
		return
	}
	for _, req := range DecideExportFences(exports, records, heldBack) {
		if _, err := s.targetd.Fence(tctx, req); err != nil {
			s.log.Warn("monitor: cannot bring a leg's fencing up to the ledger", "guest", req.Guest, "disk", req.Disk, "owner", req.Owner, "epoch", req.Epoch, "err", err)
			continue
		}
		s.log.Info("leg fenced to the ledger's owner (it was away when the guest moved)", "guest", req.Guest, "disk", req.Disk, "owner", req.Owner, "epoch", req.Epoch)
	}
}
