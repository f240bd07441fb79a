package builder

import (
	"fmt"

	"github.com/slate-os/slate/builder/rootfs"
	"github.com/slate-os/slate/builder/spec"
)

// StateSizing is the state partition's size as built, and why. The node's
// first boot grows the partition to the end of the disk, then copies the
// image's /var onto a new ext4 there: the partition must hold that copy
// even on a disk booted at its built size.
type StateSizing struct {
	// Size is the partition's size in bytes.
	Size int64 `json:"size"`
	// Reason says why, in words, for the build summary.
	Reason string `json:"reason"`
	// Needs is the smallest partition that holds the image's /var.
	Needs int64 `json:"needs"`
	// Var is the image's /var.
	Var rootfs.VarUsage `json:"var"`
}

// StateSize sizes the state partition for an image's /var. explicit is
// disk.stateSize (0: unset). Unset, it is the default or, for a larger
// /var, what holds it with headroom (a quarter more, at least 32 MiB and
// 1024 inodes, for the node's logs and state), in 64 MiB steps. Set, it
// is kept unless it cannot hold /var at all.
func StateSize(v rootfs.VarUsage, explicit int64) (StateSizing, error) {
	st := StateSizing{Var: v, Needs: stateNeeds(v.Blocks, v.Inodes)}
	what := fmt.Sprintf("the image's /var (%s, %d files)", mibString(v.Size), v.Files)
	if explicit != 0 {
		if explicit < st.Needs {
			st.Size, st.Reason = explicit, "disk.stateSize; too small for "+what
			return st, fmt.Errorf("disk.stateSize: %s cannot hold %s: the first boot copies it onto the state partition, which needs at least %s; "+
				"raise disk.stateSize (or --state-size), or leave it unset to let slate size it",
				spec.Size(explicit), what, mibString(st.Needs))
		}
		st.Size, st.Reason = explicit, "disk.stateSize; holds "+what
		return st, nil
	}
	const step = 64 << 20
	withRoom := stateNeeds(v.Blocks+max(v.Blocks/4, 32<<20), v.Inodes+max(v.Inodes/4, 1024))
	if withRoom <= int64(spec.DefaultStateSize) {
		st.Size, st.Reason = int64(spec.DefaultStateSize), "default; holds "+what+" with headroom"
		return st, nil
	}
	st.Size, st.Reason = (withRoom+step-1)/step*step, "holds "+what+" with headroom"
	return st, nil
}

// stateNeeds is the smallest partition, in whole MiB, on which ext4 holds
// data bytes (in 4 KiB blocks) in inodes inodes.
func stateNeeds(data, inodes int64) int64 {
	const mib = 1 << 20
	size := max((data+mib-1)/mib*mib, 16*mib)
	for !ext4Holds(size, data, inodes) {
		size += mib
	}
	return size
}

// ext4Holds reports whether ext4, as mkfs.ext4 makes it with mke2fs.conf's
// defaults on size bytes, holds data bytes in inodes inodes. It errs on the
// side of no: the image's own mkfs.ext4 makes the filesystem, and the
// defaults vary between e2fsprogs releases. Measured with mke2fs 1.47.0 -d:
// 156 MiB of data in 728 inodes fit in 171 MiB (this says 189 MiB), 30004
// inodes of 700 bytes in 118 MiB (this says 145 MiB).
func ext4Holds(size, data, inodes int64) bool {
	// mke2fs's "small" type (below 512 MiB) has an inode per 4 KiB, the
	// default one per 16 KiB; each inode takes 256 bytes of inode table.
	ratio := int64(16 << 10)
	if size < 512<<20 {
		ratio = 4 << 10
	}
	if size/ratio < inodes {
		return false
	}
	// The journal as ext2fs_default_journal_size gives it for 4 KiB
	// blocks, and 1/64 for bitmaps, group descriptors, the blocks reserved
	// for growing, and directories and extent trees beyond one block.
	meta := size/ratio*256 + ext4Journal(size) + size/64
	return size-meta >= data
}

func ext4Journal(size int64) int64 {
	const mib, gib = 1 << 20, 1 << 30
	switch {
	case size < 128*mib:
		return 4 * mib
	case size < gib:
		return 16 * mib
	case size < 2*gib:
		return 32 * mib
	case size < 16*gib:
		return 64 * mib
	case size < 32*gib:
		return 128 * mib
	case size < 64*gib:
		return 256 * mib
	case size < 128*gib:
		return 512 * mib
	}
	return gib
}

// mibString renders a size for people: "138 MiB", "5.9 MiB".
func mibString(n int64) string {
	if n < 10<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d MiB", (n+(1<<19))>>20)
}
