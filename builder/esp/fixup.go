package esp

// The post-pass over what go-diskfs v1.9.4 writes.
//
// go-diskfs's FAT32 writer (filesystem/fat32, which reuses filesystem/fat12
// for directories and files) is sound for create, mkdir and write, but what
// it leaves on disk has these faults, each measured with `fsck.fat -n`
// (dosfstools 4.2) or by building twice (TestGoDiskfsFaults shows them all):
//
//  1. The ".." entry of every top-level directory holds cluster 2, the root
//     directory's first cluster (readDirWithMkdir copies the parent's
//     cluster). FAT requires 0 for "the root" there. fsck: "Invalid '..'
//     entry in the second slot".
//  2. FSInfo's free-cluster count and next-free hint are left at 0xFFFFFFFF
//     ("unknown") for ever: Create writes them so and nothing updates them.
//     fsck: "Free cluster summary uninitialized".
//  3. Every new file gets a cluster at creation (mkFile), so an empty file
//     keeps a one-cluster chain while its size is 0. fsck: "File size is 0
//     bytes, cluster chain length is > 0 bytes".
//  4. Directory entries are stamped with the clock (util/timestamp.GetTime:
//     time.Now or SOURCE_DATE_EPOCH, a process-wide environment variable a
//     library should not have to set), and the ".." of a top-level directory
//     gets the zero time.Time, which encodes as a garbage date. Two builds
//     differ.
//  5. The volume serial is either clock-derived or, with reproducible=true
//     (which Write uses), 0, and there is no way to pass one in; its BPB
//     writer (dos71bpb.go) would also store it big-endian, against the FAT
//     spec. Options.VolumeID goes in by hand, little-endian.
//
// All five are fixed in place below, by reading the BPB, walking every
// directory from the root and rewriting entries, the FAT and FSInfo. The
// walk also checks what fsck would (cluster chains in range and of the
// right length, no lost or shared clusters, no duplicate 8.3 names), so a
// go-diskfs regression fails the build instead of shipping a broken ESP.
//
// Not fixable here, so handled before go-diskfs runs: go-diskfs sizes its FAT
// for more clusters than the data area has and would allocate past the end
// of the filesystem when it fills up; Write checks that the files fit first
// (tree.clusters), and the walk rejects any cluster beyond the end.
//
// go-diskfs's reader has one fault of its own: it cannot open an empty file
// whose start cluster is 0 (the correct form, and what fixup writes); see
// FS.ReadFile.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// layout is what the post-pass needs from a FAT32 boot sector.
type layout struct {
	bytesPerSector    int64
	sectorsPerCluster int64
	reservedSectors   int64
	numFATs           int64
	fatSectors        int64
	rootCluster       uint32
	fsInfoSector      int64
	backupBootSector  int64
	clusterCount      uint32 // data clusters, numbered 2..clusterCount+1
	// totalSectors, when not 0, is the smaller total the boot sectors
	// must say: the clusters go-diskfs's short FAT cannot map are cut.
	totalSectors int64
	volumeID     uint32
	label        string
}

func (l *layout) clusterBytes() int64 { return l.bytesPerSector * l.sectorsPerCluster }
func (l *layout) fatBytes() int64     { return l.fatSectors * l.bytesPerSector }
func (l *layout) fatOffset(i int64) int64 {
	return (l.reservedSectors + i*l.fatSectors) * l.bytesPerSector
}
func (l *layout) clusterOffset(c uint32) int64 {
	return l.fatOffset(l.numFATs) + int64(c-2)*l.clusterBytes()
}

// Boot sector and FSInfo offsets (Microsoft FAT specification).
const (
	bpbBytesPerSector    = 11
	bpbSectorsPerCluster = 13
	bpbReservedSectors   = 14
	bpbNumFATs           = 16
	bpbRootEntries       = 17
	bpbTotalSectors16    = 19
	bpbFATSize16         = 22
	bpbTotalSectors32    = 32
	bpbFATSize32         = 36
	bpbRootCluster       = 44
	bpbFSInfo            = 48
	bpbBackupBoot        = 50
	bpbBootSignature     = 66
	bpbVolumeID          = 67
	bpbVolumeLabel       = 71

	fsiLeadSig   = 0
	fsiStrucSig  = 484
	fsiFreeCount = 488
	fsiNextFree  = 492
	fsiTrailSig  = 508
)

// readLayout parses and checks the FAT32 boot sector at off; size is the
// space the filesystem may occupy.
func readLayout(f io.ReaderAt, off, size int64) (*layout, error) {
	b := make([]byte, 512)
	if _, err := f.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("reading boot sector: %w", err)
	}
	if b[510] != 0x55 || b[511] != 0xaa {
		return nil, errors.New("no boot sector signature (not a FAT filesystem)")
	}
	u16 := func(o int) int64 { return int64(binary.LittleEndian.Uint16(b[o:])) }
	u32 := func(o int) int64 { return int64(binary.LittleEndian.Uint32(b[o:])) }
	l := &layout{
		bytesPerSector:    u16(bpbBytesPerSector),
		sectorsPerCluster: int64(b[bpbSectorsPerCluster]),
		reservedSectors:   u16(bpbReservedSectors),
		numFATs:           int64(b[bpbNumFATs]),
		fatSectors:        u32(bpbFATSize32),
		rootCluster:       uint32(u32(bpbRootCluster)),
		fsInfoSector:      u16(bpbFSInfo),
		backupBootSector:  u16(bpbBackupBoot),
	}
	total := u16(bpbTotalSectors16)
	if total == 0 {
		total = u32(bpbTotalSectors32)
	}
	switch bps := l.bytesPerSector; {
	case bps != 512 && bps != 1024 && bps != 2048 && bps != 4096:
		return nil, fmt.Errorf("bad bytes per sector %d", bps)
	case l.sectorsPerCluster == 0 || l.sectorsPerCluster&(l.sectorsPerCluster-1) != 0:
		return nil, fmt.Errorf("bad sectors per cluster %d", l.sectorsPerCluster)
	case u16(bpbRootEntries) != 0 || u16(bpbFATSize16) != 0 || l.fatSectors == 0:
		return nil, errors.New("not FAT32 (FAT12/16 boot sector)")
	case l.reservedSectors == 0 || l.numFATs == 0:
		return nil, errors.New("no reserved sectors or no FAT")
	case total*bps > size:
		return nil, fmt.Errorf("filesystem of %d bytes does not fit in %d", total*bps, size)
	}
	data := total - l.fatOffset(l.numFATs)/l.bytesPerSector
	if data <= 0 {
		return nil, errors.New("no data area")
	}
	clusters := data / l.sectorsPerCluster
	// 65525 is the FAT32 minimum: with fewer, every FAT driver takes the
	// volume for FAT16, whatever the boot sector says.
	if clusters < 65525 || clusters > 0x0ffffff5 {
		return nil, fmt.Errorf("%d clusters is outside FAT32's 65525..268435445 (the ESP must be at least about 33 MiB)", clusters)
	}
	if max := l.fatBytes()/4 - 2; clusters > max {
		// go-diskfs v1.9.4 sizes the FAT for the data clusters without the
		// two reserved entries, one sector short at some sizes (a 64 MiB
		// ESP). The volume is cut to the clusters its FAT maps: fixup
		// writes the smaller total, the walk rejects a cluster past it.
		if clusters-max > 1024/4 {
			return nil, fmt.Errorf("FAT of %d bytes is too small for %d clusters", l.fatBytes(), clusters)
		}
		clusters = max
		l.totalSectors = l.fatOffset(l.numFATs)/l.bytesPerSector + clusters*l.sectorsPerCluster
	}
	l.clusterCount = uint32(clusters)
	if l.rootCluster < 2 || l.rootCluster > l.clusterCount+1 {
		return nil, fmt.Errorf("root directory cluster %d out of range", l.rootCluster)
	}
	if l.fsInfoSector == 0 || l.fsInfoSector >= l.reservedSectors ||
		l.backupBootSector != 0 && l.backupBootSector+l.fsInfoSector >= l.reservedSectors {
		return nil, errors.New("FSInfo or backup boot sector outside the reserved area")
	}
	if b[bpbBootSignature] == 0x29 {
		l.volumeID = binary.LittleEndian.Uint32(b[bpbVolumeID:])
		l.label = string(b[bpbVolumeLabel : bpbVolumeLabel+11])
	}
	return l, nil
}

// FAT entry values (28 bits).
const (
	fatMask = 0x0fffffff
	fatBad  = 0x0ffffff7
	fatEOC  = 0x0ffffff8 // and above
)

// fixer holds the state of one post-pass.
type fixer struct {
	f      *os.File
	off    int64
	l      *layout
	fat    []byte // the first FAT, as on disk
	owner  []bool // cluster -> reached from the root
	dirty  bool   // fat changed
	date   uint16 // FAT date, time and 10 ms count of Options.ModTime
	time   uint16
	tenths byte
}

// fixup is the post-pass: see the comment at the top of this file.
func fixup(f *os.File, off int64, opt Options) error {
	l, err := readLayout(f, off, opt.Size)
	if err != nil {
		return fmt.Errorf("esp: post-pass: %w", err)
	}
	x := &fixer{f: f, off: off, l: l, fat: make([]byte, l.fatBytes()), owner: make([]bool, l.clusterCount+2)}
	x.date, x.time, x.tenths = dosTime(opt.ModTime)
	if _, err := f.ReadAt(x.fat, off+l.fatOffset(0)); err != nil {
		return fmt.Errorf("esp: post-pass: reading FAT: %w", err)
	}
	if err := x.dir(l.rootCluster, 0, "/"); err != nil {
		return fmt.Errorf("esp: post-pass: %w", err)
	}

	// Every FAT entry in use must belong to something reached from the root,
	// and none may lie past the last data cluster.
	free, last := uint32(0), uint32(0)
	for c := uint32(2); c < uint32(len(x.fat)/4); c++ {
		v := x.next(c)
		switch {
		case c > l.clusterCount+1:
			if v != 0 {
				return fmt.Errorf("esp: post-pass: cluster %d past the end of the filesystem (%d clusters) is in use", c, l.clusterCount)
			}
		case v == 0:
			free++
		case !x.owner[c]:
			return fmt.Errorf("esp: post-pass: cluster %d is allocated but belongs to no file", c)
		default:
			last = c
		}
	}
	if x.dirty {
		for i := int64(0); i < l.numFATs; i++ {
			if _, err := f.WriteAt(x.fat, off+l.fatOffset(i)); err != nil {
				return fmt.Errorf("esp: post-pass: writing FAT %d: %w", i+1, err)
			}
		}
	}

	// FSInfo, and its backup after the backup boot sector: the real free
	// count, and as next-free hint the last allocated cluster, which is what
	// mkfs.fat writes on a new volume (2, the root) and Linux reads it as.
	fsis := []int64{l.fsInfoSector}
	if l.backupBootSector != 0 {
		fsis = append(fsis, l.backupBootSector+l.fsInfoSector)
	}
	for _, s := range fsis {
		b := make([]byte, l.bytesPerSector)
		if _, err := f.ReadAt(b, off+s*l.bytesPerSector); err != nil {
			return fmt.Errorf("esp: post-pass: reading FSInfo: %w", err)
		}
		if binary.LittleEndian.Uint32(b[fsiLeadSig:]) != 0x41615252 ||
			binary.LittleEndian.Uint32(b[fsiStrucSig:]) != 0x61417272 ||
			binary.LittleEndian.Uint32(b[fsiTrailSig:]) != 0xaa550000 {
			return fmt.Errorf("esp: post-pass: no FSInfo signature in sector %d", s)
		}
		binary.LittleEndian.PutUint32(b[fsiFreeCount:], free)
		binary.LittleEndian.PutUint32(b[fsiNextFree:], last)
		if _, err := f.WriteAt(b, off+s*l.bytesPerSector); err != nil {
			return fmt.Errorf("esp: post-pass: writing FSInfo: %w", err)
		}
	}

	// The volume ID, in the boot sector and its backup (fsck.fat compares
	// the two), and the total where the FAT cannot map the whole area
	// (readLayout).
	var id [4]byte
	binary.LittleEndian.PutUint32(id[:], opt.VolumeID)
	boots := []int64{0}
	if l.backupBootSector != 0 {
		boots = append(boots, l.backupBootSector)
	}
	for _, s := range boots {
		if _, err := f.WriteAt(id[:], off+s*l.bytesPerSector+bpbVolumeID); err != nil {
			return fmt.Errorf("esp: post-pass: writing volume ID: %w", err)
		}
		if l.totalSectors != 0 {
			var n [4]byte
			binary.LittleEndian.PutUint32(n[:], uint32(l.totalSectors))
			if _, err := f.WriteAt(n[:], off+s*l.bytesPerSector+bpbTotalSectors32); err != nil {
				return fmt.Errorf("esp: post-pass: writing the sector count: %w", err)
			}
		}
	}
	return nil
}

func (x *fixer) next(c uint32) uint32 { return binary.LittleEndian.Uint32(x.fat[4*c:]) & fatMask }

func (x *fixer) setNext(c, v uint32) {
	old := binary.LittleEndian.Uint32(x.fat[4*c:])
	binary.LittleEndian.PutUint32(x.fat[4*c:], old&^fatMask|v) // keep the 4 reserved bits
	x.dirty = true
}

// chain follows the cluster chain from first, marking its clusters as owned.
func (x *fixer) chain(first uint32, what string) ([]uint32, error) {
	var cs []uint32
	for c := first; ; {
		if c < 2 || c > x.l.clusterCount+1 {
			return nil, fmt.Errorf("%s: cluster %d out of range", what, c)
		}
		if x.owner[c] {
			return nil, fmt.Errorf("%s: cluster %d is shared or loops", what, c)
		}
		x.owner[c] = true
		cs = append(cs, c)
		n := x.next(c)
		if n >= fatEOC {
			return cs, nil
		}
		if n == 0 || n == fatBad {
			return nil, fmt.Errorf("%s: chain ends in a free or bad cluster after %d", what, c)
		}
		c = n
	}
}

// dir fixes the directory at cluster (whose parent is at parent, 0 for the
// root) and everything below it.
func (x *fixer) dir(cluster, parent uint32, name string) error {
	cs, err := x.chain(cluster, name)
	if err != nil {
		return err
	}
	cb := x.l.clusterBytes()
	b := make([]byte, int64(len(cs))*cb)
	for i, c := range cs {
		if _, err := x.f.ReadAt(b[int64(i)*cb:int64(i+1)*cb], x.off+x.l.clusterOffset(c)); err != nil {
			return fmt.Errorf("%s: reading: %w", name, err)
		}
	}
	type sub struct {
		cluster uint32
		name    string
	}
	var subs []sub
	seen := map[string]bool{}
	isRoot := parent == 0 && cluster == x.l.rootCluster
	for i := 0; i+32 <= len(b); i += 32 {
		e := b[i : i+32]
		if e[0] == 0 {
			break // no entries after this one
		}
		attr := e[11]
		if e[0] == 0xe5 || attr&0x3f == 0x0f {
			continue // deleted, or a long-name part (which has no times)
		}
		// Fault 4: one time for everything.
		e[13] = x.tenths
		binary.LittleEndian.PutUint16(e[14:], x.time) // created
		binary.LittleEndian.PutUint16(e[16:], x.date) //
		binary.LittleEndian.PutUint16(e[18:], x.date) // accessed (date only)
		binary.LittleEndian.PutUint16(e[22:], x.time) // modified
		binary.LittleEndian.PutUint16(e[24:], x.date) //
		short := string(e[0:11])
		if attr&0x08 != 0 && attr&0x10 == 0 {
			continue // the volume label
		}
		switch short {
		case ".          ":
			if isRoot {
				return errors.New("root directory has a '.' entry")
			}
			setFirstCluster(e, cluster)
			continue
		case "..         ":
			if isRoot {
				return errors.New("root directory has a '..' entry")
			}
			// Fault 1: 0, not the root's cluster, when the parent is the root.
			setFirstCluster(e, parent)
			continue
		}
		if seen[short] {
			return fmt.Errorf("%s: two entries with the 8.3 name %q", name, short)
		}
		seen[short] = true
		first := firstCluster(e)
		what := fmt.Sprintf("%s entry %q", name, short)
		if attr&0x10 != 0 {
			subs = append(subs, sub{first, what})
			continue
		}
		size := int64(binary.LittleEndian.Uint32(e[28:]))
		if size == 0 {
			if first != 0 {
				// Fault 3: an empty file owns no clusters.
				cs, err := x.chain(first, what)
				if err != nil {
					return err
				}
				for _, c := range cs {
					x.setNext(c, 0)
					x.owner[c] = false
				}
				setFirstCluster(e, 0)
			}
			continue
		}
		cs, err := x.chain(first, what)
		if err != nil {
			return err
		}
		if want := ceilDiv(size, cb); int64(len(cs)) != want {
			return fmt.Errorf("%s: %d bytes in %d clusters, want %d", what, size, len(cs), want)
		}
	}
	for i, c := range cs {
		if _, err := x.f.WriteAt(b[int64(i)*cb:int64(i+1)*cb], x.off+x.l.clusterOffset(c)); err != nil {
			return fmt.Errorf("%s: writing: %w", name, err)
		}
	}
	self := cluster
	if isRoot {
		self = 0 // how ".." refers to the root
	}
	for _, s := range subs {
		if err := x.dir(s.cluster, self, s.name); err != nil {
			return err
		}
	}
	return nil
}

func firstCluster(e []byte) uint32 {
	return uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))
}

func setFirstCluster(e []byte, c uint32) {
	binary.LittleEndian.PutUint16(e[20:], uint16(c>>16))
	binary.LittleEndian.PutUint16(e[26:], uint16(c))
}

// FAT's timestamp range.
var (
	dosEpoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	dosEnd   = time.Date(2107, 12, 31, 23, 59, 59, 990_000_000, time.UTC)
)

// dosTime encodes t (in UTC, clamped to FAT's range) as a FAT date, a FAT
// time (two-second steps) and the creation time's extra 10 ms units (0..199).
func dosTime(t time.Time) (date, tm uint16, tenths byte) {
	t = t.UTC()
	if t.Before(dosEpoch) {
		t = dosEpoch
	}
	if t.After(dosEnd) {
		t = dosEnd
	}
	date = uint16(t.Year()-1980)<<9 | uint16(t.Month())<<5 | uint16(t.Day())
	tm = uint16(t.Hour())<<11 | uint16(t.Minute())<<5 | uint16(t.Second()/2)
	tenths = byte(t.Second()%2*100 + t.Nanosecond()/10_000_000)
	return date, tm, tenths
}
