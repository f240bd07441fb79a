package uki

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// PE/COFF constants (Microsoft's "PE Format" specification).
const (
	machineAMD64          = 0x8664
	magicPE32Plus         = 0x20b
	subsystemEFIApp       = 10
	fileExecutable        = 0x0002
	fileLocalSymsStripped = 0x0008
	scnCntCode            = 0x00000020
	scnCntInitializedData = 0x00000040
	scnMemRead            = 0x40000000
	sectionHeaderSize     = 40
	symbolSize            = 18
	dirSecurity           = 4 // the certificate table: where a signature goes
	dirDebug              = 6 // its entries hold file offsets
)

// Offsets in the PE32+ optional header.
const (
	optSizeOfInitializedData = 8
	optSectionAlignment      = 32
	optFileAlignment         = 36
	optSizeOfImage           = 56
	optSizeOfHeaders         = 60
	optCheckSum              = 64
	optSubsystem             = 68
	optNumberOfRvaAndSizes   = 108
	optDataDirectory         = 112
)

var le = binary.LittleEndian

// section is one section header. hdr keeps the whole 40 bytes so that
// fields this package does not touch are written back as they were.
type section struct {
	hdr            [sectionHeaderSize]byte
	name           string
	virtualSize    uint32
	virtualAddress uint32
	sizeOfRawData  uint32
	pointerToRaw   uint32
}

// encode puts the fields back into hdr.
func (s *section) encode() []byte {
	clear(s.hdr[:8])
	copy(s.hdr[:8], s.name)
	le.PutUint32(s.hdr[8:], s.virtualSize)
	le.PutUint32(s.hdr[12:], s.virtualAddress)
	le.PutUint32(s.hdr[16:], s.sizeOfRawData)
	le.PutUint32(s.hdr[20:], s.pointerToRaw)
	return s.hdr[:]
}

// loadedSize is what a PE loader copies into memory (EDK2: VirtualSize,
// or SizeOfRawData when that is 0 or smaller) and what systemd-stub
// reads of it.
func (s *section) loadedSize() uint32 {
	if s.virtualSize == 0 || s.virtualSize > s.sizeOfRawData {
		return s.sizeOfRawData
	}
	return s.virtualSize
}

// data is the section's contents in the file, trimmed to its VirtualSize.
func (s *section) data(b []byte) []byte {
	return b[s.pointerToRaw : s.pointerToRaw+s.loadedSize() : s.pointerToRaw+s.loadedSize()]
}

// end is the first address past the section in memory.
func (s *section) end() uint64 {
	n := s.virtualSize
	if n == 0 {
		n = s.sizeOfRawData
	}
	return uint64(s.virtualAddress) + uint64(n)
}

// peFile locates the headers of a PE image.
type peFile struct {
	coff, opt, table int // offsets of the COFF header, the optional header, the section table
	magic            uint16
	sections         []*section
}

var errNotPE = errors.New("not a PE image")

// parse reads the headers of a PE image and checks that every section's
// data is inside it.
func parse(b []byte) (*peFile, error) {
	if len(b) < 0x40 || b[0] != 'M' || b[1] != 'Z' {
		return nil, fmt.Errorf("%w: no MZ header", errNotPE)
	}
	lfanew := uint64(le.Uint32(b[0x3c:]))
	if lfanew+24 > uint64(len(b)) || !bytes.Equal(b[lfanew:lfanew+4], []byte("PE\x00\x00")) {
		return nil, fmt.Errorf("%w: no PE signature at %#x", errNotPE, lfanew)
	}
	p := &peFile{coff: int(lfanew) + 4}
	n := int(le.Uint16(b[p.coff+2:]))
	p.opt = p.coff + 20
	p.table = p.opt + int(le.Uint16(b[p.coff+16:]))
	if p.table+n*sectionHeaderSize > len(b) || p.table < p.opt+2 {
		return nil, fmt.Errorf("truncated PE headers: %d sections at %#x, %d bytes", n, p.table, len(b))
	}
	p.magic = le.Uint16(b[p.opt:])
	for i := range n {
		s := &section{}
		copy(s.hdr[:], b[p.table+i*sectionHeaderSize:])
		s.name = string(bytes.TrimRight(s.hdr[:8], "\x00"))
		s.virtualSize = le.Uint32(s.hdr[8:])
		s.virtualAddress = le.Uint32(s.hdr[12:])
		s.sizeOfRawData = le.Uint32(s.hdr[16:])
		s.pointerToRaw = le.Uint32(s.hdr[20:])
		if uint64(s.pointerToRaw)+uint64(s.sizeOfRawData) > uint64(len(b)) {
			return nil, fmt.Errorf("section %s: data at %#x+%#x is past the end of the file (%#x bytes)",
				s.name, s.pointerToRaw, s.sizeOfRawData, len(b))
		}
		p.sections = append(p.sections, s)
	}
	return p, nil
}

// find returns the index of the named section, or -1.
func (p *peFile) find(name string) int {
	for i, s := range p.sections {
		if s.name == name {
			return i
		}
	}
	return -1
}

// imageEnd is the first address past every section in memory.
func (p *peFile) imageEnd() uint64 {
	var end uint64
	for _, s := range p.sections {
		end = max(end, s.end())
	}
	return end
}

// rawEnd is the first file offset past every section's data.
func (p *peFile) rawEnd() uint64 {
	var end uint64
	for _, s := range p.sections {
		if s.sizeOfRawData > 0 {
			end = max(end, uint64(s.pointerToRaw)+uint64(s.sizeOfRawData))
		}
	}
	return end
}

// firstRaw is the file offset of the first section data: the section
// table can grow up to there.
func (p *peFile) firstRaw(fileSize int) uint64 {
	first := uint64(fileSize)
	for _, s := range p.sections {
		if s.sizeOfRawData > 0 {
			first = min(first, uint64(s.pointerToRaw))
		}
	}
	return first
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }
