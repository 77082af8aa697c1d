package raid

import (
	"errors"
	"testing"

	"github.com/mhcodi/mhcodi/guestraid/md"
	"github.com/stretchr/testify/assert"
)

const uuidA = "11111111:11111111:11111111:11111111"

// disk is root of guest demo on node-a: leg 0 local on node-a (vda), leg
// 1 remote on node-b (vdb).
func disk(staleA, staleB bool) DiskSpec {
	return DiskSpec{Name: "root", MD: "md0", ArrayName: "demo-root", Legs: []LegSpec{
		{Serial: "SA", Node: "node-a", Local: true, Stale: staleA, Known: true},
		{Serial: "SB", Node: "node-b", Stale: staleB, Known: true},
	}}
}

func sb(slot int, events uint64, state string) *md.Super {
	return &md.Super{ArrayUUID: uuidA, Name: "demo-root", Level: "raid1", Devices: 2, Slot: slot, Events: events, ArrayState: state}
}

func TestPlanAssemble(t *testing.T) {
	blank := func(dev string) LegProbe { return LegProbe{Dev: dev} }
	leg := func(dev string, s *md.Super) LegProbe { return LegProbe{Dev: dev, Super: s} }
	foreign := sb(0, 50, "AA")
	foreign.ArrayUUID, foreign.Name = "22222222:22222222:22222222:22222222", "other-root"

	tests := []struct {
		name     string
		disk     DiskSpec
		probes   []LegProbe
		want     AssemblePlan
		notes    []string // event words
		noteLegs []string
	}{
		{
			name:   "first boot: create, local leg first, remote write-mostly",
			disk:   disk(false, false),
			probes: []LegProbe{blank("vda"), blank("vdb")},
			want:   AssemblePlan{Create: true, CreateDevs: []string{"vda", "vdb"}, WriteMostly: map[string]bool{"vdb": true}},
		},
		{
			name: "first boot on node-b: the local leg vdb is slot 0",
			disk: DiskSpec{Name: "root", MD: "md0", Legs: []LegSpec{
				{Serial: "SA", Node: "node-a", Known: true}, {Serial: "SB", Node: "node-b", Local: true, Known: true}}},
			probes: []LegProbe{blank("vda"), blank("vdb")},
			want:   AssemblePlan{Create: true, CreateDevs: []string{"vdb", "vda"}, WriteMostly: map[string]bool{"vda": true}},
		},
		{
			name:   "first boot with a leg absent: created degraded",
			disk:   disk(false, false),
			probes: []LegProbe{blank("vda"), {}},
			want:   AssemblePlan{Create: true, CreateDevs: []string{"vda", ""}, WriteMostly: map[string]bool{}},
			notes:  []string{"degraded"},
		},
		{
			name:   "second boot: both current",
			disk:   disk(false, false),
			probes: []LegProbe{leg("vda", sb(0, 20, "AA")), leg("vdb", sb(1, 20, "AA"))},
			want:   AssemblePlan{Assemble: []string{"vda", "vdb"}, Winner: "vda"},
		},
		{
			name:   "one leg missing: degraded",
			disk:   disk(false, false),
			probes: []LegProbe{{}, leg("vdb", sb(1, 20, "AA"))},
			want:   AssemblePlan{Assemble: []string{"vdb"}, Winner: "vdb"},
		},
		{
			name:   "returning leg: left for a bitmap re-add",
			disk:   disk(false, false),
			probes: []LegProbe{leg("vda", sb(0, 30, "A.")), leg("vdb", sb(1, 20, "AA"))},
			want:   AssemblePlan{Assemble: []string{"vda"}, Winner: "vda"},
		},
		{
			name:   "one event behind, each sees the other active: assembled together",
			disk:   disk(false, false),
			probes: []LegProbe{leg("vda", sb(0, 21, "AA")), leg("vdb", sb(1, 20, "AA"))},
			want:   AssemblePlan{Assemble: []string{"vda", "vdb"}, Winner: "vda"},
		},
		{
			name:     "split without stale list: more events wins, the other is left out",
			disk:     disk(false, false),
			probes:   []LegProbe{leg("vda", sb(0, 25, "A.")), leg("vdb", sb(1, 30, ".A"))},
			want:     AssemblePlan{Assemble: []string{"vdb"}, Winner: "vdb"},
			notes:    []string{"split"},
			noteLegs: []string{"node-a"},
		},
		{
			name:     "split, equal events: the local leg wins",
			disk:     disk(false, false),
			probes:   []LegProbe{leg("vda", sb(0, 30, "A.")), leg("vdb", sb(1, 30, ".A"))},
			want:     AssemblePlan{Assemble: []string{"vda"}, Winner: "vda"},
			notes:    []string{"split"},
			noteLegs: []string{"node-b"},
		},
		{
			name:     "split with stale list: the host decides against the event count",
			disk:     disk(false, true),
			probes:   []LegProbe{leg("vda", sb(0, 25, "A.")), leg("vdb", sb(1, 30, ".A"))},
			want:     AssemblePlan{Assemble: []string{"vda"}, Winner: "vda"},
			notes:    []string{"split"},
			noteLegs: []string{"node-b"},
		},
		{
			name:   "stale leg that agrees: not assembled (the Watcher wipes it)",
			disk:   disk(false, true),
			probes: []LegProbe{leg("vda", sb(0, 20, "AA")), leg("vdb", sb(1, 20, "AA"))},
			want:   AssemblePlan{Assemble: []string{"vda"}, Winner: "vda"},
		},
		{
			name:     "the only leg with data is stale: assembled anyway",
			disk:     disk(true, false),
			probes:   []LegProbe{leg("vda", sb(0, 20, "AA")), blank("vdb")},
			want:     AssemblePlan{Assemble: []string{"vda"}, Winner: "vda"},
			notes:    []string{"left-out"},
			noteLegs: []string{"node-a"},
		},
		{
			name:   "blank leg next to an existing array: not assembled (the Watcher adds it)",
			disk:   disk(false, false),
			probes: []LegProbe{leg("vda", sb(0, 20, "A.")), blank("vdb")},
			want:   AssemblePlan{Assemble: []string{"vda"}, Winner: "vda"},
		},
		{
			name:     "a leg of another array is left out",
			disk:     disk(false, false),
			probes:   []LegProbe{leg("vda", sb(0, 20, "AA")), leg("vdb", foreign)},
			want:     AssemblePlan{Assemble: []string{"vda"}, Winner: "vda"},
			notes:    []string{"left-out"},
			noteLegs: []string{"node-b"},
		},
		{
			name:     "unreadable superblock: neither blank nor usable",
			disk:     disk(false, false),
			probes:   []LegProbe{leg("vda", sb(0, 20, "AA")), {Dev: "vdb", Err: errors.New("I/O error")}},
			want:     AssemblePlan{Assemble: []string{"vda"}, Winner: "vda"},
			notes:    []string{"left-out"},
			noteLegs: []string{"node-b"},
		},
		{
			name:   "no leg present",
			disk:   disk(false, false),
			probes: []LegProbe{{}, {}},
			want:   AssemblePlan{Nothing: true},
			notes:  []string{"error"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := PlanAssemble(tc.disk, tc.probes)
			var words, legs []string
			for _, n := range got.Notes {
				words = append(words, n.Event)
				if n.Leg != "" {
					legs = append(legs, n.Leg)
				}
			}
			assert.Equal(t, tc.notes, words, "notes: %v", got.Notes)
			assert.Equal(t, tc.noteLegs, legs)
			got.Notes = nil
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestBitmapChunk(t *testing.T) {
	assert.Equal(t, int64(1<<20), BitmapChunk(256<<20)) // 256 chunks
	assert.Equal(t, int64(1<<20), BitmapChunk(256<<30)) // 2^18 chunks exactly
	assert.Equal(t, int64(4<<20), BitmapChunk(1<<40))
	assert.Equal(t, int64(1<<20), BitmapChunk(0))
}

func TestDisksFromScan(t *testing.T) {
	other := sb(0, 5, "AA")
	other.ArrayUUID, other.Name = "33333333:33333333:33333333:33333333", "demo-data"
	got := DisksFromScan([]ScannedDev{
		{Dev: "vda", Serial: "SA", Super: sb(0, 20, "AA")},
		{Dev: "vdb", Serial: "SB", Super: sb(1, 20, "AA")},
		{Dev: "vdc", Serial: "SC", Super: other},
		{Dev: "vdd", Serial: "SD"}, // blank: nobody knows its disk
	})
	assert.Equal(t, []DiskSpec{
		{Name: "demo-data", MD: "md0", ArrayName: "demo-data", UUID: other.ArrayUUID, Legs: []LegSpec{{Serial: "SC"}}},
		{Name: "demo-root", MD: "md1", ArrayName: "demo-root", UUID: uuidA, Legs: []LegSpec{{Serial: "SA"}, {Serial: "SB"}}},
	}, got)
}
