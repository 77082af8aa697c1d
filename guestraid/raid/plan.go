package raid

import (
	"fmt"
	"strings"
)

// AssemblePlan is how to start a disk's array.
type AssemblePlan struct {
	// Create: no leg has a superblock; create a RAID1 on CreateDevs
	// (slot order; "" for a missing leg). WriteMostly names legs created
	// write-mostly.
	Create      bool
	CreateDevs  []string
	WriteMostly map[string]bool
	// Assemble holds the legs to assemble the existing array from.
	Assemble []string
	// Winner is the leg whose superblock decided (assembly only).
	Winner string
	// Notes are events to report (split, left-out…). Legs left out here
	// are handled by the Watcher afterwards: re-added, wiped and added,
	// or left out for good.
	Notes []Note
	// Nothing: no usable leg is present; the array cannot start.
	Nothing bool
}

// PlanAssemble decides how to start disk d from its legs' probes
// (parallel to d.Legs):
//
//   - no leg has a superblock: create, local leg first, a missing leg as
//     "missing" (the Watcher adds it when it appears);
//   - otherwise the legs of one array (UUID) take part; host-stale legs
//     only if no other leg is left (a guest always boots);
//   - the winner is the leg with the most events (ties: the local leg,
//     then the host's order); a leg joins it if the two regard each other
//     as active members;
//   - a leg whose superblock says the winner is not an active member ran
//     without it: the two diverged (split brain). It is never assembled
//     with the winner and is reported (split); the host's stale flag, if
//     set on one of them, decided which one won;
//   - a leg the winner regards as missing but which regards the winner as
//     active is a returning leg: left for the Watcher to re-add through
//     the bitmap.
func PlanAssemble(d DiskSpec, probes []LegProbe) AssemblePlan {
	var p AssemblePlan
	var present, withSB []int
	for i, pr := range probes {
		if pr.Dev == "" {
			continue
		}
		if pr.Err != nil {
			p.Notes = append(p.Notes, Note{Event: "left-out", Leg: d.Legs[i].ID(),
				Detail: fmt.Sprintf("%s: superblock unreadable: %v", pr.Dev, pr.Err)})
			continue
		}
		present = append(present, i)
		if pr.Super != nil {
			withSB = append(withSB, i)
		}
	}
	if len(present) == 0 {
		p.Nothing = true
		p.Notes = append(p.Notes, Note{Event: "error", Detail: "no leg of the disk is present; the array cannot start"})
		return p
	}
	if len(withSB) == 0 {
		return planCreate(d, probes, present)
	}

	// One array: the UUID of the leg that carries the disk's array name,
	// is not stale and has the most events.
	best := -1
	for _, i := range withSB {
		if best < 0 || better(d, probes, i, best, true) {
			best = i
		}
	}
	uuid := probes[best].Super.ArrayUUID
	var group []int
	for _, i := range withSB {
		if probes[i].Super.ArrayUUID == uuid {
			group = append(group, i)
			continue
		}
		p.Notes = append(p.Notes, Note{Event: "left-out", Leg: d.Legs[i].ID(),
			Detail: fmt.Sprintf("%s belongs to another array (%s %q, not %s)", probes[i].Dev, probes[i].Super.ArrayUUID, probes[i].Super.Name, uuid)})
	}
	w := best
	ws := probes[w].Super
	p.Winner = probes[w].Dev
	p.Assemble = []string{probes[w].Dev}
	if d.Legs[w].Stale {
		p.Notes = append(p.Notes, Note{Event: "left-out", Leg: d.Legs[w].ID(),
			Detail: fmt.Sprintf("the host marks %s stale but it is the only leg with data: assembling it anyway", probes[w].Dev)})
	}
	for _, i := range group {
		if i == w {
			continue
		}
		xs := probes[i].Super
		leg, dev := d.Legs[i], probes[i].Dev
		diverged := xs.Slot < 0 || xs.Slot == ws.Slot || !xs.ActiveIn(ws.Slot)
		switch {
		case diverged && xs.Slot >= 0:
			why := fmt.Sprintf("%s (events %d, array state %s) and %s (events %d, array state %s) each ran without the other",
				probes[w].Dev, ws.Events, ws.ArrayState, dev, xs.Events, xs.ArrayState)
			switch {
			case leg.Stale:
				why += fmt.Sprintf("; the host marks %s stale: it is wiped and resynced in full", dev)
			case d.Legs[w].Stale:
				why += fmt.Sprintf("; both are marked stale: %s wins (more events, else the local leg, else the first), %s is left out", probes[w].Dev, dev)
			default:
				why += fmt.Sprintf("; %s wins (more events, else the local leg, else the first), %s is left out until the host marks one stale", probes[w].Dev, dev)
			}
			p.Notes = append(p.Notes, Note{Event: "split", Leg: leg.ID(), Detail: why})
		case leg.Stale && !d.Legs[w].Stale:
			// Wiped and added by the Watcher, never assembled.
		case xs.Slot < 0:
			// A spare holds no data: the Watcher adds it.
		case xs.Events == ws.Events || ws.ActiveIn(xs.Slot):
			p.Assemble = append(p.Assemble, dev)
		default:
			// Behind, but it never ran without the winner: a bitmap re-add.
		}
	}
	return p
}

func planCreate(d DiskSpec, probes []LegProbe, present []int) AssemblePlan {
	p := AssemblePlan{Create: true, WriteMostly: map[string]bool{}}
	order := make([]int, 0, len(d.Legs))
	for i, l := range d.Legs {
		if l.Local {
			order = append(order, i)
		}
	}
	for i, l := range d.Legs {
		if !l.Local {
			order = append(order, i)
		}
	}
	var missing []string
	for _, i := range order {
		dev := probes[i].Dev
		if !probes[i].present() {
			dev = ""
			missing = append(missing, d.Legs[i].ID())
		}
		p.CreateDevs = append(p.CreateDevs, dev)
		if dev != "" && d.Legs[i].Known && !d.Legs[i].Local {
			p.WriteMostly[dev] = true
		}
	}
	if len(missing) > 0 {
		p.Notes = append(p.Notes, Note{Event: "degraded",
			Detail: fmt.Sprintf("created without leg %s (absent): it is added with a full resync when it appears", strings.Join(missing, ", "))})
	}
	_ = present
	return p
}

// better says whether leg i beats leg j as the one whose superblock
// decides: the disk's array name, not stale (when avoidStale), more
// events, local, host order.
func better(d DiskSpec, probes []LegProbe, i, j int, avoidStale bool) bool {
	if d.ArrayName != "" {
		ni, nj := probes[i].Super.Name == d.ArrayName, probes[j].Super.Name == d.ArrayName
		if ni != nj {
			return ni
		}
	}
	if avoidStale && d.Legs[i].Stale != d.Legs[j].Stale {
		return !d.Legs[i].Stale
	}
	ei, ej := probes[i].Super.Events, probes[j].Super.Events
	if ei != ej {
		return ei > ej
	}
	if d.Legs[i].Local != d.Legs[j].Local {
		return d.Legs[i].Local
	}
	return i < j
}
