// Package gpt reads a GUID Partition Table and grows the partition that ends
// last to the end of a disk that has become larger: the init does this for the
// state partition on first boot, when the disk image was written to (or
// attached as) a disk bigger than the image, and on every later boot, for a
// disk that grew since (a resized cloud volume).
//
// It is deliberately small and dependency free (the init links it): it works on
// any io.ReaderAt / io.WriterAt, so it is tested on sparse files, and the
// kernel is told about the new size by the caller (BLKPG).
package gpt

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// Signature starts every GPT header.
const Signature = "EFI PART"

const (
	headerMinSize = 92
	entryMinSize  = 128
	// maxEntryBytes bounds the partition entry array we are willing to read
	// (the usual array is 128 entries of 128 bytes: 16 KiB).
	maxEntryBytes = 1 << 20
)

// GUID is a GUID as stored on disk: the first three fields little endian.
type GUID [16]byte

// ParseGUID parses the canonical text form (either case), for example
// "4D21B016-B534-45C2-A9FB-5C16E091FD2D".
func ParseGUID(s string) (GUID, error) {
	var g GUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("malformed GUID %q", s)
	}
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		return g, fmt.Errorf("malformed GUID %q", s)
	}
	// Text order is big endian; the first three fields are stored little endian.
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	copy(g[8:], b[8:])
	return g, nil
}

// String is the canonical upper-case text form.
func (g GUID) String() string {
	b := []byte{g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6]}
	b = append(b, g[8:]...)
	h := strings.ToUpper(hex.EncodeToString(b))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// IsZero reports an all-zero GUID (an unused partition entry has a zero type).
func (g GUID) IsZero() bool { return g == GUID{} }

// Header is a GPT header (primary or backup).
type Header struct {
	Revision       uint32
	HeaderSize     uint32
	MyLBA          uint64
	AlternateLBA   uint64
	FirstUsableLBA uint64
	LastUsableLBA  uint64
	DiskGUID       GUID
	EntriesLBA     uint64
	NumEntries     uint32
	EntrySize      uint32
	EntriesCRC     uint32
}

// Partition is one used entry of the partition array.
type Partition struct {
	// Number is the 1-based partition number, as Linux numbers it (entry index + 1).
	Number     int
	Type       GUID
	ID         GUID // the unique partition GUID: the PARTUUID
	FirstLBA   uint64
	LastLBA    uint64
	Attributes uint64
	Name       string
}

// Table is a disk's primary GPT.
type Table struct {
	SectorSize int
	Header     Header
	Partitions []Partition
	// entries is the raw partition entry array, NumEntries*EntrySize bytes.
	entries []byte
}

// Find returns the partition with the given unique GUID, or nil.
func (t *Table) Find(id GUID) *Partition {
	for i := range t.Partitions {
		if t.Partitions[i].ID == id {
			return &t.Partitions[i]
		}
	}
	return nil
}

func (h *Header) marshal(sectorSize int) []byte {
	b := make([]byte, sectorSize)
	copy(b, Signature)
	le := binary.LittleEndian
	le.PutUint32(b[8:], h.Revision)
	le.PutUint32(b[12:], h.HeaderSize)
	// b[16:20] CRC, b[20:24] reserved
	le.PutUint64(b[24:], h.MyLBA)
	le.PutUint64(b[32:], h.AlternateLBA)
	le.PutUint64(b[40:], h.FirstUsableLBA)
	le.PutUint64(b[48:], h.LastUsableLBA)
	copy(b[56:72], h.DiskGUID[:])
	le.PutUint64(b[72:], h.EntriesLBA)
	le.PutUint32(b[80:], h.NumEntries)
	le.PutUint32(b[84:], h.EntrySize)
	le.PutUint32(b[88:], h.EntriesCRC)
	le.PutUint32(b[16:], crc32.ChecksumIEEE(b[:h.HeaderSize]))
	return b
}

func parseHeader(b []byte, sectorSize int) (Header, error) {
	var h Header
	if string(b[:8]) != Signature {
		return h, errors.New("no GPT signature")
	}
	le := binary.LittleEndian
	h.Revision = le.Uint32(b[8:])
	h.HeaderSize = le.Uint32(b[12:])
	if h.HeaderSize < headerMinSize || int(h.HeaderSize) > sectorSize {
		return h, fmt.Errorf("bad GPT header size %d", h.HeaderSize)
	}
	want := le.Uint32(b[16:])
	c := make([]byte, h.HeaderSize)
	copy(c, b)
	le.PutUint32(c[16:], 0)
	if got := crc32.ChecksumIEEE(c); got != want {
		return h, fmt.Errorf("GPT header CRC mismatch (stored %08x, computed %08x)", want, got)
	}
	h.MyLBA = le.Uint64(b[24:])
	h.AlternateLBA = le.Uint64(b[32:])
	h.FirstUsableLBA = le.Uint64(b[40:])
	h.LastUsableLBA = le.Uint64(b[48:])
	copy(h.DiskGUID[:], b[56:72])
	h.EntriesLBA = le.Uint64(b[72:])
	h.NumEntries = le.Uint32(b[80:])
	h.EntrySize = le.Uint32(b[84:])
	h.EntriesCRC = le.Uint32(b[88:])
	if h.EntrySize < entryMinSize || h.EntrySize%8 != 0 {
		return h, fmt.Errorf("bad GPT entry size %d", h.EntrySize)
	}
	if uint64(h.NumEntries)*uint64(h.EntrySize) > maxEntryBytes {
		return h, fmt.Errorf("GPT entry array too large (%d entries of %d bytes)", h.NumEntries, h.EntrySize)
	}
	return h, nil
}

// entrySectors is how many sectors the entry array takes.
func (h *Header) entrySectors(sectorSize int) uint64 {
	n := uint64(h.NumEntries) * uint64(h.EntrySize)
	return (n + uint64(sectorSize) - 1) / uint64(sectorSize)
}

// Read reads and checks the primary GPT (header at LBA 1 and its entry array).
func Read(r io.ReaderAt, sectorSize int) (*Table, error) {
	if sectorSize < 512 || sectorSize&(sectorSize-1) != 0 {
		return nil, fmt.Errorf("bad sector size %d", sectorSize)
	}
	hb := make([]byte, sectorSize)
	if _, err := r.ReadAt(hb, int64(sectorSize)); err != nil {
		return nil, fmt.Errorf("reading GPT header: %w", err)
	}
	h, err := parseHeader(hb, sectorSize)
	if err != nil {
		return nil, fmt.Errorf("primary GPT: %w", err)
	}
	if h.MyLBA != 1 {
		return nil, fmt.Errorf("primary GPT: header says it is at LBA %d, not 1", h.MyLBA)
	}
	ents := make([]byte, int(h.NumEntries)*int(h.EntrySize))
	if _, err := r.ReadAt(ents, int64(h.EntriesLBA)*int64(sectorSize)); err != nil {
		return nil, fmt.Errorf("reading GPT entries: %w", err)
	}
	if got := crc32.ChecksumIEEE(ents); got != h.EntriesCRC {
		return nil, fmt.Errorf("primary GPT: entry array CRC mismatch (stored %08x, computed %08x)", h.EntriesCRC, got)
	}
	t := &Table{SectorSize: sectorSize, Header: h, entries: ents}
	le := binary.LittleEndian
	for i := 0; i < int(h.NumEntries); i++ {
		e := ents[i*int(h.EntrySize):]
		var p Partition
		copy(p.Type[:], e[0:16])
		if p.Type.IsZero() {
			continue
		}
		copy(p.ID[:], e[16:32])
		p.Number = i + 1
		p.FirstLBA = le.Uint64(e[32:])
		p.LastLBA = le.Uint64(e[40:])
		p.Attributes = le.Uint64(e[48:])
		u := make([]uint16, 0, 36)
		for j := 0; j < 36; j++ {
			c := le.Uint16(e[56+2*j:])
			if c == 0 {
				break
			}
			u = append(u, c)
		}
		p.Name = string(utf16.Decode(u))
		if p.LastLBA < p.FirstLBA {
			return nil, fmt.Errorf("GPT partition %d ends (LBA %d) before it starts (LBA %d)", p.Number, p.LastLBA, p.FirstLBA)
		}
		t.Partitions = append(t.Partitions, p)
	}
	return t, nil
}

// ReadWriterAt is a disk: a block device or an image file.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// Syncer is implemented by *os.File; GrowLast syncs between its writes when
// the disk implements it, so a power cut leaves one valid table.
type Syncer interface{ Sync() error }

// GrowResult says what GrowLast did.
type GrowResult struct {
	// Number is the grown partition's 1-based number.
	Number int
	// FirstLBA, OldLastLBA and NewLastLBA are in sectors of the table's sector size.
	FirstLBA, OldLastLBA, NewLastLBA uint64
	// Changed is false when the table already spanned the whole disk.
	Changed bool
}

// GrowLast extends the partition with unique GUID id to the disk's last
// usable LBA, moves the backup GPT (entries and header) to the end of the
// disk, and rewrites the primary header and the protective MBR to match,
// with fresh CRCs. diskSize is the disk's size in bytes. The partition must
// be the one that ends last. It is idempotent: on a table that already spans
// the disk it writes nothing.
//
// Write order: backup first, then the primary. A cut in between leaves the
// old primary (and the old backup it points to) intact; the caller runs
// GrowLast again on the next boot.
func GrowLast(disk ReadWriterAt, sectorSize int, diskSize int64, id GUID) (GrowResult, error) {
	var res GrowResult
	t, err := Read(disk, sectorSize)
	if err != nil {
		return res, err
	}
	h := t.Header
	p := t.Find(id)
	if p == nil {
		return res, fmt.Errorf("no partition with PARTUUID %s in the GPT", id)
	}
	res.Number, res.FirstLBA, res.OldLastLBA, res.NewLastLBA = p.Number, p.FirstLBA, p.LastLBA, p.LastLBA
	for _, q := range t.Partitions {
		if q.Number != p.Number && q.LastLBA >= p.LastLBA {
			return res, fmt.Errorf("partition %d (%s) is not the last on the disk: partition %d ends at LBA %d, after it", p.Number, id, q.Number, q.LastLBA)
		}
	}
	ss := uint64(sectorSize)
	total := uint64(diskSize) / ss
	esec := h.entrySectors(sectorSize)
	if total < 2*esec+3 {
		return res, fmt.Errorf("disk of %d sectors is too small for a GPT", total)
	}
	lastLBA := total - 1
	newLastUsable := lastLBA - esec - 1
	if newLastUsable < p.LastLBA || lastLBA < h.AlternateLBA {
		return res, fmt.Errorf("disk (%d sectors) is smaller than its partition table says (backup header at LBA %d, partition %d ends at LBA %d)", total, h.AlternateLBA, p.Number, p.LastLBA)
	}
	if h.AlternateLBA == lastLBA && h.LastUsableLBA == newLastUsable && p.LastLBA == newLastUsable {
		return res, nil
	}
	oldAlt := h.AlternateLBA

	// New entry array.
	ents := append([]byte(nil), t.entries...)
	off := (p.Number - 1) * int(h.EntrySize)
	binary.LittleEndian.PutUint64(ents[off+40:], newLastUsable)
	ecrc := crc32.ChecksumIEEE(ents)
	epad := make([]byte, int(esec)*sectorSize)
	copy(epad, ents)

	prim := h
	prim.AlternateLBA = lastLBA
	prim.LastUsableLBA = newLastUsable
	prim.EntriesCRC = ecrc

	back := prim
	back.MyLBA = lastLBA
	back.AlternateLBA = 1
	back.EntriesLBA = lastLBA - esec

	sync := func() error {
		if s, ok := disk.(Syncer); ok {
			return s.Sync()
		}
		return nil
	}
	// 1. Backup entries and header at the new end of the disk.
	if _, err := disk.WriteAt(epad, int64(back.EntriesLBA*ss)); err != nil {
		return res, fmt.Errorf("writing backup GPT entries: %w", err)
	}
	if _, err := disk.WriteAt(back.marshal(sectorSize), int64(back.MyLBA*ss)); err != nil {
		return res, fmt.Errorf("writing backup GPT header: %w", err)
	}
	if err := sync(); err != nil {
		return res, err
	}
	// 2. Primary entries and header.
	if _, err := disk.WriteAt(epad, int64(prim.EntriesLBA*ss)); err != nil {
		return res, fmt.Errorf("writing primary GPT entries: %w", err)
	}
	if _, err := disk.WriteAt(prim.marshal(sectorSize), int64(ss)); err != nil {
		return res, fmt.Errorf("writing primary GPT header: %w", err)
	}
	// 3. The protective MBR's 0xEE partition covers the whole disk.
	if err := fixProtectiveMBR(disk, total); err != nil {
		return res, err
	}
	// 4. The old backup header now lies inside the grown partition: wipe it
	// so nothing mistakes it for a table.
	if oldAlt != lastLBA && oldAlt > p.LastLBA && oldAlt <= newLastUsable {
		if _, err := disk.WriteAt(make([]byte, sectorSize), int64(oldAlt*ss)); err != nil {
			return res, fmt.Errorf("wiping old backup GPT header: %w", err)
		}
	}
	if err := sync(); err != nil {
		return res, err
	}
	res.NewLastLBA = newLastUsable
	res.Changed = true
	return res, nil
}

func fixProtectiveMBR(disk ReadWriterAt, totalSectors uint64) error {
	mbr := make([]byte, 512)
	if _, err := disk.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("reading protective MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return nil
	}
	// Find the 0xEE entry (normally the first).
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i:]
		if e[4] != 0xEE || binary.LittleEndian.Uint32(e[8:]) != 1 {
			continue
		}
		size := totalSectors - 1
		if size > 0xFFFFFFFF {
			size = 0xFFFFFFFF
		}
		old := make([]byte, 4)
		copy(old, e[12:16])
		binary.LittleEndian.PutUint32(e[12:], uint32(size))
		if bytes.Equal(old, e[12:16]) {
			return nil
		}
		if _, err := disk.WriteAt(mbr, 0); err != nil {
			return fmt.Errorf("writing protective MBR: %w", err)
		}
		return nil
	}
	return nil
}
