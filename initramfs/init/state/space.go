package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Need is what copying a tree onto a filesystem takes.
type Need struct {
	// Bytes is the data in the filesystem's blocks: every regular file and
	// directory rounded up to a block, a symlink too long for its inode
	// one block.
	Bytes int64
	// Inodes counts the entries, a hard-linked file once.
	Inodes int64
}

// fastSymlinkMax is the longest symlink target ext4 keeps in the inode.
const fastSymlinkMax = 59

// Needs walks src as CopyTree would copy it into dst and adds up what the
// copy takes on a filesystem of blockSize blocks: only what is not in dst
// yet, so that a copy cut short needs only the rest.
func Needs(src, dst string, blockSize int64) (Need, error) {
	var n Need
	round := func(size int64) int64 { return (size + blockSize - 1) / blockSize * blockSize }
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil // dst exists
		}
		if _, err := os.Lstat(filepath.Join(dst, rel)); err == nil {
			if d.IsDir() {
				if fi, _ := os.Stat(filepath.Join(dst, rel)); fi == nil || !fi.IsDir() {
					return fs.SkipDir // CopyTree keeps what is there
				}
			}
			return nil
		}
		var s unix.Stat_t
		if err := unix.Lstat(p, &s); err != nil {
			return &fs.PathError{Op: "lstat", Path: p, Err: err}
		}
		switch s.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			// At least one block; a large directory (as the source
			// reports its size) more.
			n.Inodes++
			n.Bytes += round(max(s.Size, 1))
		case unix.S_IFREG:
			if s.Nlink > 1 {
				k := inode{uint64(s.Dev), s.Ino}
				if seen[k] {
					return nil
				}
				seen[k] = true
			}
			n.Inodes++
			n.Bytes += round(s.Size)
		case unix.S_IFLNK:
			n.Inodes++
			if s.Size > fastSymlinkMax {
				n.Bytes += blockSize
			}
		case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
			n.Inodes++
		}
		return nil
	})
	return n, err
}

// Space is a mounted filesystem's room, from statfs.
type Space struct {
	// BlockSize is the filesystem's block size.
	BlockSize int64
	// Size is the space for data (df's size); Free what is left of it,
	// the blocks reserved for root included (the init runs as root).
	Size, Free int64
	// FreeInodes are the inodes left.
	FreeInodes int64
}

// FreeSpace reads the room on the filesystem mounted at dir.
func FreeSpace(dir string) (Space, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return Space{}, &fs.PathError{Op: "statfs", Path: dir, Err: err}
	}
	bs := int64(st.Bsize)
	return Space{BlockSize: bs, Size: int64(st.Blocks) * bs, Free: int64(st.Bfree) * bs, FreeInodes: int64(st.Ffree)}, nil
}

// CheckFits says, before the copy starts, whether the image's /var fits on
// the state partition dev, rather than letting the copy die half way with
// "no space left on device".
func CheckFits(dev string, need Need, free Space) error {
	const fix = "grow the disk or build the image with a larger disk.stateSize"
	if need.Bytes > free.Free {
		return fmt.Errorf("state partition %s has %s free, the image's /var needs %s: %s", dev, mibs(free.Free), mibs(need.Bytes), fix)
	}
	if need.Inodes > free.FreeInodes {
		return fmt.Errorf("state partition %s has %d free inodes, the image's /var needs %d: %s", dev, free.FreeInodes, need.Inodes, fix)
	}
	return nil
}

// mibs rounds up: a need of 1 byte over is not "0 MiB".
func mibs(n int64) string { return fmt.Sprintf("%d MiB", (n+(1<<20)-1)>>20) }

// Ext4 superblock fields.
const (
	sbBlocksLo    = sbOffset + 0x04
	sbLogBlock    = sbOffset + 0x18
	sbIncompat    = sbOffset + 0x60
	sbBlocksHi    = sbOffset + 0x150
	incompat64bit = 0x80
)

// Ext4Blocks reads an ext4 superblock: the block size and the block count.
func Ext4Blocks(r io.ReaderAt) (blockSize int64, blocks uint64, err error) {
	b := make([]byte, sbOffset+1024)
	if _, err := r.ReadAt(b, 0); err != nil {
		return 0, 0, fmt.Errorf("reading the ext4 superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(b[magicOffset:]) != ext4Magic {
		return 0, 0, errors.New("no ext4 superblock")
	}
	logBS := le.Uint32(b[sbLogBlock:])
	if logBS > 6 { // 64 KiB
		return 0, 0, fmt.Errorf("ext4 superblock: block size 1024<<%d", logBS)
	}
	blocks = uint64(le.Uint32(b[sbBlocksLo:]))
	if le.Uint32(b[sbIncompat:])&incompat64bit != 0 {
		blocks |= uint64(le.Uint32(b[sbBlocksHi:])) << 32
	}
	return 1024 << logBS, blocks, nil
}

// ext4IocResizeFS is EXT4_IOC_RESIZE_FS, _IOW('f', 16, __u64).
const ext4IocResizeFS = 0x40086610

// ResizeFS grows the ext4 filesystem mounted at dir to blocks blocks,
// online, as resize2fs does for a mounted filesystem, so the init needs
// no resize2fs. The kernel leaves out a last block group too small to
// be useful.
func ResizeFS(dir string, blocks uint64) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	n := blocks
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), ext4IocResizeFS, uintptr(unsafe.Pointer(&n))); e != 0 {
		return fmt.Errorf("EXT4_IOC_RESIZE_FS on %s to %d blocks: %w", dir, blocks, e)
	}
	return nil
}
