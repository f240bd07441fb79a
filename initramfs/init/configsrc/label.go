package configsrc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// Filesystem types Probe recognises, as mount(2) names them.
const (
	FSVfat    = "vfat"
	FSISO9660 = "iso9660"
)

// DriveLabel is the label of a config drive's filesystem. A FAT label
// holds 11 characters, so on vfat the label is its first 11, SLATE-CONFI
// (mkfs.vfat refuses a longer -n; mtools' mlabel cuts it to that).
// Labels compare without regard to case.
const DriveLabel = "SLATE-CONFIG"

// fatLabelLen is the length of a FAT volume label.
const fatLabelLen = 11

// IsDriveLabel is true when label, read from a filesystem of type fsType,
// names a config drive: DriveLabel, cut to what the filesystem can hold.
func IsDriveLabel(fsType, label string) bool {
	want := DriveLabel
	if fsType == FSVfat {
		want = want[:fatLabelLen]
	}
	return strings.EqualFold(strings.TrimSpace(label), want)
}

// Probed is a filesystem found by Probe.
type Probed struct {
	// Type is FSVfat or FSISO9660.
	Type string
	// Label is the volume label, trailing spaces removed ("" if none).
	Label string
	// ID tells two filesystems apart: the FAT volume serial number, or the
	// ISO 9660 volume creation time (as blkid's UUID for each).
	ID string
}

// Probe reads a device's superblocks and returns the vfat or iso9660
// filesystem it holds, if any. For FAT it reads the label from the root
// directory's volume label entry when there is one (as Windows writes it,
// and as blkid reads it), else from the boot sector (FAT12/16 at 0x2B,
// FAT32 at 0x47); for ISO 9660 the primary volume descriptor's volume
// identifier (sector 16 on, offset 40, 32 bytes).
func Probe(r io.ReaderAt) (Probed, bool) {
	if p, ok := probeISO(r); ok {
		return p, true
	}
	return probeFAT(r)
}

// ISO 9660: volume descriptors are 2048-byte sectors from sector 16 on,
// ending with a terminator (type 255).
const isoSector = 2048

func probeISO(r io.ReaderAt) (Probed, bool) {
	b := make([]byte, isoSector)
	for i := int64(16); i < 32; i++ {
		if _, err := r.ReadAt(b, i*isoSector); err != nil {
			return Probed{}, false
		}
		if string(b[1:6]) != "CD001" || b[6] != 1 {
			return Probed{}, false
		}
		switch b[0] {
		case 1: // primary volume descriptor
			return Probed{
				Type:  FSISO9660,
				Label: strings.TrimRight(string(b[40:72]), " \x00"),
				ID:    strings.TrimRight(string(b[813:829]), " \x00"),
			}, true
		case 255:
			return Probed{}, false
		}
	}
	return Probed{}, false
}

func probeFAT(r io.ReaderAt) (Probed, bool) {
	b := make([]byte, 512)
	if _, err := r.ReadAt(b, 0); err != nil {
		return Probed{}, false
	}
	le16 := func(o int) uint32 { return uint32(binary.LittleEndian.Uint16(b[o:])) }
	le32 := func(o int) uint32 { return binary.LittleEndian.Uint32(b[o:]) }

	jump := b[0] == 0xEB && b[2] == 0x90 || b[0] == 0xE9
	bps, spc, reserved, nFATs, media := le16(11), uint32(b[13]), le16(14), uint32(b[16]), b[21]
	rootEnts, fatSz16, fatSz32 := le16(17), le16(22), le32(36)
	switch {
	case !jump,
		bps != 512 && bps != 1024 && bps != 2048 && bps != 4096,
		spc == 0 || spc&(spc-1) != 0,
		reserved == 0, nFATs == 0 || nFATs > 4,
		media != 0xF0 && media < 0xF8:
		return Probed{}, false
	}
	p := Probed{Type: FSVfat}
	var bpbLabel []byte
	var rootOff, rootLen int64
	if fatSz16 == 0 && rootEnts == 0 { // FAT32
		if fatSz32 == 0 {
			return Probed{}, false
		}
		if b[0x42] == 0x29 || b[0x42] == 0x28 {
			p.ID = fmt.Sprintf("%04X-%04X", le32(0x43)>>16, le32(0x43)&0xffff)
		}
		if b[0x42] == 0x29 {
			bpbLabel = b[0x47:0x52]
		}
		rootClus := le32(44)
		if rootClus >= 2 {
			firstData := int64(reserved) + int64(nFATs)*int64(fatSz32)
			rootOff = (firstData + int64(rootClus-2)*int64(spc)) * int64(bps)
			rootLen = int64(spc) * int64(bps)
		}
	} else {
		if fatSz16 == 0 {
			return Probed{}, false
		}
		if b[0x26] == 0x29 || b[0x26] == 0x28 {
			p.ID = fmt.Sprintf("%04X-%04X", le32(0x27)>>16, le32(0x27)&0xffff)
		}
		if b[0x26] == 0x29 {
			bpbLabel = b[0x2B:0x36]
		}
		rootOff = (int64(reserved) + int64(nFATs)*int64(fatSz16)) * int64(bps)
		rootLen = int64(rootEnts) * 32
	}
	if l, ok := rootDirLabel(r, rootOff, rootLen); ok {
		p.Label = l
	} else if bpbLabel != nil {
		p.Label = cleanFATLabel(bpbLabel)
	}
	if p.Label == "NO NAME" {
		p.Label = ""
	}
	return p, true
}

// rootDirLabel finds the volume label entry among the first entries of a
// FAT root directory (at most 64 KiB of it).
func rootDirLabel(r io.ReaderAt, off, n int64) (string, bool) {
	if off <= 0 || n <= 0 {
		return "", false
	}
	if n > 64<<10 {
		n = 64 << 10
	}
	dir := make([]byte, n)
	if m, err := r.ReadAt(dir, off); err != nil && m < 32 {
		return "", false
	} else {
		dir = dir[:m]
	}
	for i := 0; i+32 <= len(dir); i += 32 {
		e := dir[i : i+32]
		switch {
		case e[0] == 0: // end of directory
			return "", false
		case e[0] == 0xE5: // deleted
			continue
		case e[11]&0x0F == 0x0F: // long file name part
			continue
		case e[11]&0x18 == 0x08: // volume label, not a directory
			name := append([]byte(nil), e[:11]...)
			if name[0] == 0x05 {
				name[0] = 0xE5
			}
			return cleanFATLabel(name), true
		}
	}
	return "", false
}

func cleanFATLabel(b []byte) string {
	return string(bytes.TrimRight(b, " \x00"))
}
