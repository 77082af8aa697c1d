// Package workload is the guest image's test workload: it writes a
// self-checking pattern to a block device (md0) continuously, so a test or
// a demo can cut legs while the guest writes and prove afterwards, from
// either leg on the host, that nothing was lost or torn. It also measures
// sequential throughput for make bench-guest.
//
// Every block of the region carries its own index, the generation (pass)
// that wrote it and a CRC32C of the whole block, so a reader needs nothing
// but the bytes: a block from the wrong place, a stale pass or a torn
// write is told apart from a good one.
package workload

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// BlockSize is the unit the workload writes; every block is written with
// O_DIRECT in one request.
const BlockSize = 4096

// magic starts every pattern block.
var magic = [8]byte{'M', 'H', 'C', 'W', 'R', 'K', '0', '1'}

// Block layout: magic (8), index (8), generation (8), crc32c (4), zero (4),
// payload.
const (
	offIndex   = 8
	offGen     = 16
	offCRC     = 24
	offPayload = 32
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Fill writes block idx of generation gen into b (BlockSize bytes).
func Fill(b []byte, idx, gen uint64) {
	_ = b[BlockSize-1]
	copy(b, magic[:])
	binary.LittleEndian.PutUint64(b[offIndex:], idx)
	binary.LittleEndian.PutUint64(b[offGen:], gen)
	binary.LittleEndian.PutUint32(b[offCRC:], 0)
	binary.LittleEndian.PutUint32(b[offCRC+4:], 0)
	// splitmix64: cheap, and different for every (idx, gen).
	x := idx*0x9e3779b97f4a7c15 ^ gen*0xbf58476d1ce4e5b9
	for i := offPayload; i < BlockSize; i += 8 {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		binary.LittleEndian.PutUint64(b[i:], z^z>>31)
	}
	binary.LittleEndian.PutUint32(b[offCRC:], crc32.Checksum(b[:BlockSize], castagnoli))
}

// BlockState is what Check found in one block.
type BlockState int

// Block states.
const (
	Good  BlockState = iota // a valid pattern block for its index
	Blank                   // all zeros: never written
	Bad                     // anything else: torn, misplaced or foreign
)

// Check reads the block at index idx from b and returns its generation
// when it is Good.
func Check(b []byte, idx uint64) (BlockState, uint64, error) {
	_ = b[BlockSize-1]
	if [8]byte(b[:8]) != magic {
		for _, c := range b[:BlockSize] {
			if c != 0 {
				return Bad, 0, fmt.Errorf("block %d: no pattern magic", idx)
			}
		}
		return Blank, 0, nil
	}
	if got := binary.LittleEndian.Uint64(b[offIndex:]); got != idx {
		return Bad, 0, fmt.Errorf("block %d: holds block %d", idx, got)
	}
	gen := binary.LittleEndian.Uint64(b[offGen:])
	want := binary.LittleEndian.Uint32(b[offCRC:])
	var c [BlockSize]byte
	copy(c[:], b[:BlockSize])
	binary.LittleEndian.PutUint32(c[offCRC:], 0)
	if got := crc32.Checksum(c[:], castagnoli); got != want {
		return Bad, gen, fmt.Errorf("block %d generation %d: crc32c %08x, want %08x (torn or corrupt)", idx, gen, got, want)
	}
	return Good, gen, nil
}
