// Package superblock reads the md version-1.2 superblock of a leg from the
// host side, without md in the host kernel: where the data starts, which
// array the leg belongs to and how current it is. Hosts use it to compare
// the two legs of a stopped guest, and to tell a blank leg from a used
// one.
package superblock

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Offset is where metadata 1.2 keeps the superblock: 4 KiB from the start
// of the device.
const Offset = 4096

// Magic is the md superblock magic (MD_SB_MAGIC).
const Magic = 0xa92b4efc

// ErrNoSuperblock says the leg carries no md 1.2 superblock (blank, or
// another format).
var ErrNoSuperblock = errors.New("no md 1.2 superblock")

// Superblock holds the fields of struct mdp_superblock_1 (linux
// include/uapi/linux/raid/md_p.h) that hosts need.
type Superblock struct {
	MajorVersion uint32 `json:"major_version"`
	FeatureMap   uint32 `json:"feature_map"`
	ArrayUUID    string `json:"array_uuid"`
	Name         string `json:"name"`
	Level        int32  `json:"level"`
	RaidDisks    uint32 `json:"raid_disks"`
	// DataOffset and DataSize are in bytes (the superblock stores 512-byte
	// sectors).
	DataOffset  int64  `json:"data_offset"`
	DataSize    int64  `json:"data_size"`
	SuperOffset int64  `json:"super_offset"`
	DevNumber   uint32 `json:"dev_number"`
	DevUUID     string `json:"dev_uuid"`
	Events      uint64 `json:"events"`
	// BitmapOffset is in sectors relative to the superblock (signed).
	BitmapOffset int32 `json:"bitmap_offset"`
}

// HasBitmap reports an internal write-intent bitmap (MD_FEATURE_BITMAP_OFFSET).
func (s Superblock) HasBitmap() bool { return s.FeatureMap&1 != 0 }

// Read reads the superblock of a leg.
func Read(r io.ReaderAt) (Superblock, error) {
	b := make([]byte, 256)
	if _, err := r.ReadAt(b, Offset); err != nil {
		return Superblock{}, fmt.Errorf("read md superblock: %w", err)
	}
	return Parse(b)
}

// Parse decodes the first 256 bytes of a superblock.
func Parse(b []byte) (Superblock, error) {
	if len(b) < 256 {
		return Superblock{}, fmt.Errorf("md superblock: %d bytes, want 256", len(b))
	}
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != Magic {
		return Superblock{}, ErrNoSuperblock
	}
	s := Superblock{
		MajorVersion: le.Uint32(b[4:]),
		FeatureMap:   le.Uint32(b[8:]),
		ArrayUUID:    uuid(b[16:32]),
		Name:         strings.TrimRight(string(b[32:64]), "\x00"),
		Level:        int32(le.Uint32(b[72:])),
		RaidDisks:    le.Uint32(b[92:]),
		BitmapOffset: int32(le.Uint32(b[96:])),
		DataOffset:   int64(le.Uint64(b[128:])) * 512,
		DataSize:     int64(le.Uint64(b[136:])) * 512,
		SuperOffset:  int64(le.Uint64(b[144:])) * 512,
		DevNumber:    le.Uint32(b[160:]),
		DevUUID:      uuid(b[168:184]),
		Events:       le.Uint64(b[200:]),
	}
	if s.MajorVersion != 1 {
		return s, fmt.Errorf("md superblock major version %d, want 1", s.MajorVersion)
	}
	if s.SuperOffset != Offset {
		return s, fmt.Errorf("md superblock at sector %d, not metadata 1.2 (sector 8)", s.SuperOffset/512)
	}
	return s, nil
}

func uuid(b []byte) string {
	h := hex.EncodeToString(b)
	return h[0:8] + ":" + h[8:16] + ":" + h[16:24] + ":" + h[24:32]
}

// CompareData compares the data areas of two legs (from each one's
// DataOffset, over the smaller DataSize) and returns the byte offset of
// the first difference within the data, or -1 when they are identical.
func CompareData(a, b io.ReaderAt) (int64, error) {
	sa, err := Read(a)
	if err != nil {
		return 0, fmt.Errorf("leg a: %w", err)
	}
	sb, err := Read(b)
	if err != nil {
		return 0, fmt.Errorf("leg b: %w", err)
	}
	size := min(sa.DataSize, sb.DataSize)
	const chunk = 1 << 20
	ba, bb := make([]byte, chunk), make([]byte, chunk)
	for off := int64(0); off < size; off += chunk {
		n := min(chunk, size-off)
		if _, err := a.ReadAt(ba[:n], sa.DataOffset+off); err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("leg a at %d: %w", off, err)
		}
		if _, err := b.ReadAt(bb[:n], sb.DataOffset+off); err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("leg b at %d: %w", off, err)
		}
		for i := int64(0); i < n; i++ {
			if ba[i] != bb[i] {
				return off + i, nil
			}
		}
	}
	return -1, nil
}
