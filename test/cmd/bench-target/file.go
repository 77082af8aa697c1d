package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
)

// makeFilledFile creates a sparse file of size bytes, then writes data over
// all of it once and syncs: every target then reads the same bytes from the
// page cache, and no benchmark row pays for allocating blocks or for the
// fill's writeback. The data is pseudo-random so nothing on the way can
// shortcut zeros.
func makeFilledFile(path string, size int64) (err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("bench file: %w", err)
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("bench file: %w", err)
	}
	const chunk = 4 << 20
	buf := make([]byte, chunk)
	rng := rand.New(rand.NewChaCha8([32]byte{'m', 'h', 'c', 'o', 'd', 'i'}))
	for off := int64(0); off < size; off += chunk {
		for i := 0; i+8 <= len(buf); i += 8 {
			v := rng.Uint64()
			for j := 0; j < 8; j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		n := min(int64(chunk), size-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return fmt.Errorf("bench file: fill at %d: %w", off, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("bench file: sync: %w", err)
	}
	return nil
}
