package rootfs

import (
	"archive/tar"
	"strings"
)

// VarBlock is the block size VarUsage rounds to: ext4's usual one, and the
// largest the state filesystem has, so the count is an upper bound.
const VarBlock = 4096

// VarUsage is what the image's /var takes once the node's first boot has
// copied it onto the state filesystem (the partition mounted on /var), so
// the builder can size that partition to hold it.
type VarUsage struct {
	// Size is the sum of the sizes of /var's regular files.
	Size int64 `json:"size"`
	// Blocks is the space its entries take in VarBlock blocks, in bytes:
	// each regular file rounded up, one block per directory and per
	// symlink too long to live in its inode.
	Blocks int64 `json:"blocks"`
	// Files counts regular files; Inodes every entry under /var (files,
	// directories, symlinks, devices), a hard-linked file once.
	Files  int64 `json:"files"`
	Inodes int64 `json:"inodes"`
}

// fastSymlinkMax is the longest symlink target ext4 keeps in the inode.
const fastSymlinkMax = 59

// varCounter adds up VarUsage from the flattened stream's headers.
type varCounter struct {
	u VarUsage
	// outside are the sizes of regular files outside var/: a hard link
	// under var/ to one of them becomes a file of its own in the copy.
	outside map[string]int64
	// linked are those outside files already counted under var/.
	linked map[string]bool
}

func inVar(p string) bool { return strings.HasPrefix(p, "var/") }

func blocks(n int64) int64 { return (n + VarBlock - 1) / VarBlock * VarBlock }

// add counts one entry; p is its cleaned path (see clean). /var itself is
// the state filesystem's root, which exists anyway.
func (c *varCounter) add(p string, h *tar.Header) {
	if !inVar(p) {
		if h.Typeflag == tar.TypeReg {
			if c.outside == nil {
				c.outside = map[string]int64{}
			}
			c.outside[p] = h.Size
		}
		return
	}
	switch h.Typeflag {
	case tar.TypeReg:
		c.file(h.Size)
	case tar.TypeLink:
		// Another name for an inode already counted, unless it lives
		// outside /var: the copy (which sees /var alone) makes it a file
		// there, once.
		target := clean(h.Linkname)
		if inVar(target) || c.linked[target] {
			return
		}
		size, ok := c.outside[target]
		if !ok {
			return
		}
		if c.linked == nil {
			c.linked = map[string]bool{}
		}
		c.linked[target] = true
		c.file(size)
	case tar.TypeDir:
		c.u.Inodes++
		c.u.Blocks += VarBlock
	case tar.TypeSymlink:
		c.u.Inodes++
		if len(h.Linkname) > fastSymlinkMax {
			c.u.Blocks += VarBlock
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		c.u.Inodes++
	}
}

func (c *varCounter) file(size int64) {
	c.u.Files++
	c.u.Inodes++
	c.u.Size += size
	c.u.Blocks += blocks(size)
}
