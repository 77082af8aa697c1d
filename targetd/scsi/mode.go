package scsi

import "math"

// Mode page codes (SBC-3 6.4, SPC-4 7.5).
const (
	pageCaching  = 0x08
	pageControl  = 0x0a
	pageAllPages = 0x3f
)

// Page control values of MODE SENSE.
const (
	pcCurrent    = 0
	pcChangeable = 1
	pcDefault    = 2
	pcSaved      = 3
)

// modePages lists the pages we implement, in the order of "all pages".
var modePages = [...]byte{pageCaching, pageControl}

// modePage returns a mode page as MODE SENSE reports it for page control
// pc, or nil when the page does not exist.
func (lu *LU) modePage(code byte, pc byte) []byte {
	switch code {
	case pageCaching:
		p := make([]byte, 20)
		p[0], p[1] = pageCaching, 18
		switch pc {
		case pcCurrent:
			if lu.wce.Load() {
				p[2] = 0x04 // WCE
			}
		case pcChangeable:
			p[2] = 0x04 // only WCE may change
		case pcDefault:
			if lu.cfg.WriteCacheEnabled == nil || *lu.cfg.WriteCacheEnabled {
				p[2] = 0x04
			}
		}
		return p
	case pageControl:
		p := make([]byte, 12)
		p[0], p[1] = pageControl, 10
		if pc == pcChangeable {
			p[4] = ctrlSWP // only SWP may change (see swp.go)
			return p
		}
		// TST=0 (one task set), D_SENSE=0 (fixed sense), QUEUE
		// ALGORITHM MODIFIER=1 (unrestricted reordering), QERR=0,
		// UA_INTLCK_CTRL=0, SWP as set (0 by default), TAS=0 (aborted
		// tasks end silently), BUSY TIMEOUT PERIOD unlimited.
		p[3] = 0x10
		if pc == pcCurrent && lu.swp.Load() {
			p[4] = ctrlSWP
		}
		be16put(p[8:], 0xffff)
		return p
	}
	return nil
}

// modeSense handles MODE SENSE(6) and MODE SENSE(10) (SPC-4 6.11, 6.12).
func (x *exec) modeSense() Result {
	cdb := x.cmd.CDB
	six := cdb[0] == opModeSense6
	dbd := cdb[1]&0x08 != 0
	llbaa := !six && cdb[1]&0x10 != 0
	pc, code, sub := cdb[2]>>6, cdb[2]&0x3f, cdb[3]
	alloc := int(cdb[4])
	if !six {
		alloc = int(be16(cdb[7:]))
	}
	if pc == pcSaved {
		return illegalRequest(ascSavingParamsNotSupported)
	}
	var pages []byte
	switch {
	case code == pageAllPages && (sub == 0 || sub == 0xff):
		for _, c := range modePages {
			pages = append(pages, x.lu.modePage(c, pc)...)
		}
	case sub == 0 || sub == 0xff:
		pages = x.lu.modePage(code, pc)
		if pages == nil {
			return invalidCDBField(2, 5)
		}
	default:
		return invalidCDBField(3, -1)
	}

	var desc []byte
	if !dbd {
		nb, bs := x.lu.numBlocks(), x.lu.bs
		if pc == pcChangeable {
			nb, bs = 0, 0
		}
		if llbaa {
			desc = make([]byte, 16)
			be64put(desc, nb)
			be32put(desc[12:], bs)
		} else {
			desc = make([]byte, 8)
			be32put(desc, uint32(min(nb, math.MaxUint32)))
			desc[5], desc[6], desc[7] = byte(bs>>16), byte(bs>>8), byte(bs)
		}
	}
	devSpecific := byte(0x10) // DPOFUA: DPO and FUA are honoured
	if x.lu.cfg.ReadOnly || x.lu.swp.Load() {
		devSpecific |= 0x80 // WP
	}
	var b []byte
	if six {
		b = make([]byte, 4, 4+len(desc)+len(pages))
		b[2], b[3] = devSpecific, byte(len(desc))
	} else {
		b = make([]byte, 8, 8+len(desc)+len(pages))
		b[3] = devSpecific
		if llbaa && len(desc) != 0 {
			b[4] = 0x01 // LONGLBA
		}
		be16put(b[6:], uint16(len(desc)))
	}
	b = append(b, desc...)
	b = append(b, pages...)
	if six {
		b[0] = byte(len(b) - 1)
	} else {
		be16put(b, uint16(len(b)-2))
	}
	b = allocLen(b, alloc)
	return Result{Status: StatusGood, Data: b, TransferLen: uint32(len(b))}
}

// modeSelect handles MODE SELECT(6) and MODE SELECT(10) (SPC-4 6.9,
// 6.10): only the bits MODE SENSE reports as changeable may differ from
// the current values: WCE and SWP.
func (x *exec) modeSelect() Result {
	cdb := x.cmd.CDB
	six := cdb[0] == opModeSelect6
	plen := int(cdb[4])
	hdr := 4
	if !six {
		plen, hdr = int(be16(cdb[7:])), 8
	}
	xfer := uint32(plen)
	if cdb[1]&0x01 != 0 {
		return withXfer(invalidCDBField(1, 0), xfer) // SP: cannot save
	}
	if plen == 0 {
		return good()
	}
	if len(x.cmd.Data) < plen || plen < hdr {
		return withXfer(illegalRequest(ascParamListLengthError), xfer)
	}
	p := x.cmd.Data[:plen]
	bdl := int(p[3])
	if !six {
		bdl = int(be16(p[6:]))
	}
	off := hdr
	switch {
	case bdl == 0:
	case bdl == 8 || (bdl == 16 && !six && p[4]&0x01 != 0):
		if off+bdl > plen {
			return withXfer(illegalRequest(ascParamListLengthError), xfer)
		}
		d := p[off : off+bdl]
		var bs uint32
		if bdl == 8 {
			bs = be24(d[5:])
		} else {
			bs = be32(d[12:])
		}
		if bs != 0 && bs != x.lu.bs {
			return withXfer(invalidParamField(off+bdl-3), xfer)
		}
		off += bdl
	default:
		return withXfer(invalidParamField(hdr-1), xfer)
	}

	wce, swp := x.lu.wce.Load(), x.lu.swp.Load()
	for off < plen {
		if off+2 > plen {
			return withXfer(illegalRequest(ascParamListLengthError), xfer)
		}
		if p[off]&0x40 != 0 {
			return withXfer(invalidParamField(off), xfer) // no subpages
		}
		code := p[off] & 0x3f
		cur := x.lu.modePage(code, pcCurrent)
		if cur == nil {
			return withXfer(invalidParamField(off), xfer)
		}
		if int(p[off+1]) != len(cur)-2 {
			return withXfer(invalidParamField(off+1), xfer)
		}
		if off+len(cur) > plen {
			return withXfer(illegalRequest(ascParamListLengthError), xfer)
		}
		changeable := x.lu.modePage(code, pcChangeable)
		in := p[off : off+len(cur)]
		// Byte 0 holds PS, which is reserved in MODE SELECT: ignore it.
		for i := 2; i < len(cur); i++ {
			if (in[i]^cur[i])&^changeable[i] != 0 {
				return withXfer(invalidParamField(off+i), xfer)
			}
		}
		switch code {
		case pageCaching:
			wce = in[2]&0x04 != 0
		case pageControl:
			swp = in[4]&ctrlSWP != 0
		}
		off += len(cur)
	}
	wceChanged := x.lu.wce.Swap(wce) != wce
	swpChanged := x.lu.setSWP(swp)
	if wceChanged || swpChanged {
		// Turning the cache off promises that what was written is
		// durable from now on; so does write protection (SPC-4: SWP
		// inhibits writing "after writing all cached or buffered write
		// data").
		if (wceChanged && !wce) || (swpChanged && swp) {
			if err := x.lu.dev.Sync(); err != nil {
				return withXfer(x.writeFailed(err), xfer)
			}
		}
		n := x.cmd.Nexus
		x.lu.mutate(func(s *luState) bool {
			s.addUAAll(ascModeParametersChanged, &n)
			return true
		})
	}
	return withXfer(good(), xfer)
}
