package iscsitest

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// Capacity is a LUN's READ CAPACITY (16) answer.
type Capacity struct {
	BlockSize int64 // logical block length in bytes
	Blocks    int64 // last LBA + 1
}

// Bytes is the LUN's size.
func (c Capacity) Bytes() int64 { return c.BlockSize * c.Blocks }

var (
	capLBARE   = regexp.MustCompile(`RETURNED LOGICAL BLOCK ADDRESS:(\d+)`)
	capBlockRE = regexp.MustCompile(`LOGICAL BLOCK LENGTH IN BYTES:(\d+)`)
)

// ReadCapacity asks the LUN its size with libiscsi's iscsi-readcapacity16,
// so callers can turn byte sizes into iscsi-perf's block counts whatever
// the target's logical block size.
func ReadCapacity(ctx context.Context, url string) (Capacity, error) {
	bin, err := Tool("iscsi-readcapacity16")
	if err != nil {
		return Capacity{}, err
	}
	if err := checkURL(url); err != nil {
		return Capacity{}, err
	}
	res, err := runClient(ctx, clientSpec{name: "iscsi-readcapacity16", argv: []string{bin, url}, timeout: 30 * time.Second})
	if err != nil {
		return Capacity{}, err
	}
	if res.stalled || res.exitCode != 0 {
		return Capacity{}, fmt.Errorf("iscsi-readcapacity16 %s: exit %d, stalled %v: %s", url, res.exitCode, res.stalled, tail(res.output, 500))
	}
	return parseCapacity(res.output)
}

func parseCapacity(out string) (Capacity, error) {
	lba := capLBARE.FindStringSubmatch(out)
	bs := capBlockRE.FindStringSubmatch(out)
	if lba == nil || bs == nil {
		return Capacity{}, fmt.Errorf("iscsi-readcapacity16: unexpected output: %s", tail(out, 500))
	}
	last, err1 := strconv.ParseInt(lba[1], 10, 64)
	size, err2 := strconv.ParseInt(bs[1], 10, 64)
	if err1 != nil || err2 != nil || size <= 0 {
		return Capacity{}, fmt.Errorf("iscsi-readcapacity16: bad numbers in: %s", tail(out, 500))
	}
	return Capacity{BlockSize: size, Blocks: last + 1}, nil
}
