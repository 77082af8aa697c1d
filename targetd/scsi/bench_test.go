package scsi

import (
	"context"
	"testing"
)

func benchTarget(b *testing.B) *Target {
	lu, err := NewLU(LUConfig{Dev: NewMemDev(64<<20, true)})
	if err != nil {
		b.Fatal(err)
	}
	tgt := NewTarget(TargetOptions{})
	if err := tgt.AddLU(0, lu); err != nil {
		b.Fatal(err)
	}
	return tgt
}

// BenchmarkRead4K is the READ(10) hot path: lookup, task registration,
// lock-free gate, pooled buffer, MemDev copy, Release.
func BenchmarkRead4K(b *testing.B) {
	tgt := benchTarget(b)
	ctx := context.Background()
	cmd := &Command{Nexus: nexusA, CDB: rw10c(opRead10, 0, 0, 8), ExpectedLen: 4096, Read: true}
	b.SetBytes(4096)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		cmd.Tag = uint32(i)
		be32put(cmd.CDB[2:], uint32(i*8)%(64<<20/512-8))
		res, err := tgt.Execute(ctx, cmd)
		if err != nil || res.Status != StatusGood {
			b.Fatal(err, res.Status)
		}
		tgt.Release(&res)
	}
}

// BenchmarkWrite4K is the WRITE(16) hot path with stripe locking.
func BenchmarkWrite4K(b *testing.B) {
	tgt := benchTarget(b)
	ctx := context.Background()
	cmd := &Command{Nexus: nexusA, CDB: rw16c(opWrite16, 0, 0, 8), Data: make([]byte, 4096), ExpectedLen: 4096, Write: true}
	b.SetBytes(4096)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		cmd.Tag = uint32(i)
		be64put(cmd.CDB[2:], uint64(i*8)%(64<<20/512-8))
		res, err := tgt.Execute(ctx, cmd)
		if err != nil || res.Status != StatusGood {
			b.Fatal(err, res.Status)
		}
	}
}

// BenchmarkRead4KParallel shows that reads from many goroutines do not
// serialize on an LU lock.
func BenchmarkRead4KParallel(b *testing.B) {
	tgt := benchTarget(b)
	ctx := context.Background()
	b.SetBytes(4096)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		cmd := &Command{Nexus: nexusA, CDB: rw10c(opRead10, 0, 0, 8), ExpectedLen: 4096, Read: true}
		i := uint32(0)
		for pb.Next() {
			i++
			cmd.Tag = i
			res, err := tgt.Execute(ctx, cmd)
			if err != nil {
				b.Fatal(err)
			}
			tgt.Release(&res)
		}
	})
}
