package format

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"

	"github.com/slate-os/slate/builder/disk"
)

// VHD's footer: the last 512 bytes of a fixed VHD, whose data before it is
// the raw disk (Microsoft's Virtual Hard Disk Image Format Specification).
const (
	vhdFooterSize = 512
	vhdCookie     = "conectix"
	vhdFixed      = 2

	vhdTimestamp = 24 // uint32, seconds since 2000-01-01 00:00 UTC
	vhdCurrent   = 48 // uint64, the virtual size
	vhdDiskType  = 60 // uint32
	vhdChecksum  = 64 // uint32, one's complement of the sum of the other bytes
	vhdUniqueID  = 68 // 16 bytes
)

var vhdEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// ToVHD writes a fixed VHD, what Azure imports (a page blob it attaches as
// the OS disk; a Generation 2 VM, since slate boots by UEFI): the raw disk
// followed by a 512-byte footer, the virtual size a whole number of MiB.
// qemu-img writes it (subformat=fixed, force_size=on so the footer's size is
// the disk's exact size rather than one rounded to a CHS geometry), as Azure's
// documentation does it; its footer's timestamp and unique ID (the time and
// a random UUID) are then rewritten from o.ModTime and o.Seed, and its
// checksum recomputed, so the file is reproducible.
func ToVHD(ctx context.Context, raw, out string, o Options) error {
	fi, err := os.Stat(raw)
	if err != nil {
		return err
	}
	// slate's disk plans are whole MiB (partitions 1 MiB aligned, 1 MiB for
	// the backup GPT); Azure refuses anything else.
	if fi.Size()%(1<<20) != 0 {
		return fmt.Errorf("%s is %d bytes, not a whole number of MiB as Azure requires", raw, fi.Size())
	}
	if err := qemuImg(ctx, raw, o.Progress, "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", raw, out); err != nil {
		return err
	}
	f, err := os.OpenFile(out, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	end := fi.Size()
	footer := make([]byte, vhdFooterSize)
	if _, err := f.ReadAt(footer, end); err != nil {
		return fmt.Errorf("%s: reading the footer qemu-img wrote: %w", out, err)
	}
	if err := checkVHDFooter(footer, end); err != nil {
		return fmt.Errorf("%s as qemu-img wrote it: %w", out, err)
	}
	binary.BigEndian.PutUint32(footer[vhdTimestamp:], vhdTime(o.ModTime))
	id := uuid.MustParse(disk.GUID(o.Seed, "vhd"))
	copy(footer[vhdUniqueID:], id[:])
	binary.BigEndian.PutUint32(footer[vhdChecksum:], vhdSum(footer))
	if _, err := f.WriteAt(footer, end); err != nil {
		return fmt.Errorf("%s: %w", out, err)
	}
	return f.Close()
}

// vhdTime is t in the footer's clock, clamped to what it can hold.
func vhdTime(t time.Time) uint32 {
	s := t.Unix() - vhdEpoch.Unix()
	return uint32(max(0, min(s, 1<<32-1)))
}

// vhdSum is the footer's checksum: the one's complement of the sum of all
// its bytes but the checksum's own four.
func vhdSum(footer []byte) uint32 {
	var sum uint32
	for i, b := range footer {
		if i < vhdChecksum || i >= vhdChecksum+4 {
			sum += uint32(b)
		}
	}
	return ^sum
}

// checkVHDFooter checks that footer is a fixed VHD's, with a good checksum,
// whose disk is the dataSize bytes before it.
func checkVHDFooter(footer []byte, dataSize int64) error {
	if string(footer[:8]) != vhdCookie {
		return fmt.Errorf("no VHD footer (cookie %q, want %q)", footer[:8], vhdCookie)
	}
	if got, want := binary.BigEndian.Uint32(footer[vhdChecksum:]), vhdSum(footer); got != want {
		return fmt.Errorf("VHD footer checksum %#08x, the footer sums to %#08x", got, want)
	}
	if t := binary.BigEndian.Uint32(footer[vhdDiskType:]); t != vhdFixed {
		return fmt.Errorf("VHD disk type %d, want %d (fixed)", t, vhdFixed)
	}
	if size := binary.BigEndian.Uint64(footer[vhdCurrent:]); size != uint64(dataSize) {
		return fmt.Errorf("the VHD footer says the disk is %d bytes, the file holds %d before the footer", size, dataSize)
	}
	return nil
}
