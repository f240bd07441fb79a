package verity

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"regexp"
)

// Layout describes an image in slate's verity format: Size bytes in total,
// the squashfs in [0, DataSize), the superblock at HashOffset and the hash
// tree after it, as `veritysetup format --hash-offset=HashOffset` lays them
// out. A root slot and a system extension are both this. Artifacts carry it
// in their signed configs: the root hash is what the image is trusted by.
type Layout struct {
	// Size is the whole image in bytes.
	Size int64 `json:"size"`
	// DataSize is the squashfs padded to a multiple of 4 KiB.
	DataSize int64 `json:"dataSize"`
	// HashOffset is where the verity superblock starts (>= DataSize).
	HashOffset int64 `json:"hashOffset"`
	// RootHash is the verity root hash, lowercase hex.
	RootHash string `json:"rootHash"`
	// Salt is the verity salt, hex; empty for none.
	Salt string `json:"salt"`
	// Algorithm is the verity hash algorithm: "sha256".
	Algorithm string `json:"algorithm"`
	// DataBlockSize and HashBlockSize are the verity block sizes in bytes.
	DataBlockSize int `json:"dataBlockSize"`
	HashBlockSize int `json:"hashBlockSize"`
}

var (
	rootHashRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	saltRE     = regexp.MustCompile(`^([0-9a-f]{2}){0,256}$`)
)

// Check checks every field of l; each problem is prefixed with field, the
// name of l in its document ("config.root").
func (l Layout) Check(field string) []string {
	var p []string
	bad := func(f, format string, args ...any) {
		p = append(p, field+"."+f+": "+fmt.Sprintf(format, args...))
	}

	if l.Algorithm != "sha256" {
		bad("algorithm", "%q, want \"sha256\"", l.Algorithm)
	}
	if l.RootHash == "" {
		bad("rootHash", "missing")
	} else if !rootHashRE.MatchString(l.RootHash) {
		bad("rootHash", "%q is not a sha256 hash (64 lowercase hex digits, got %d characters)", l.RootHash, len(l.RootHash))
	}
	if !saltRE.MatchString(l.Salt) {
		bad("salt", "%q is not lowercase hex of at most 256 bytes", l.Salt)
	}
	blockOK := func(f string, n int) bool {
		if n < 512 || n > 4096 || n&(n-1) != 0 {
			bad(f, "%d, want a power of two from 512 to 4096", n)
			return false
		}
		return true
	}
	dataOK := blockOK("dataBlockSize", l.DataBlockSize)
	hashOK := blockOK("hashBlockSize", l.HashBlockSize)

	switch {
	case l.DataSize <= 0:
		bad("dataSize", "%d, want the squashfs size padded to 4 KiB", l.DataSize)
		dataOK = false
	case l.DataSize%4096 != 0:
		bad("dataSize", "%d is not a multiple of 4096 (the squashfs is padded to 4 KiB)", l.DataSize)
		dataOK = false
	case dataOK && l.DataSize%int64(l.DataBlockSize) != 0:
		bad("dataSize", "%d is not a multiple of dataBlockSize %d", l.DataSize, l.DataBlockSize)
		dataOK = false
	}
	switch {
	case l.HashOffset < l.DataSize:
		bad("hashOffset", "%d is inside the data (dataSize %d)", l.HashOffset, l.DataSize)
		hashOK = false
	case hashOK && l.HashOffset%int64(l.HashBlockSize) != 0:
		bad("hashOffset", "%d is not a multiple of hashBlockSize %d", l.HashOffset, l.HashBlockSize)
		hashOK = false
	}
	if dataOK && hashOK {
		if min := l.MinSize(); l.Size < min {
			bad("size", "%d, but the data, verity superblock and hash tree need at least %d bytes (hashOffset %d + superblock %d + tree %d)",
				l.Size, min, l.HashOffset, l.HashBlockSize, min-l.HashOffset-int64(l.HashBlockSize))
		}
	} else if l.Size <= l.HashOffset {
		bad("size", "%d, want more than hashOffset %d", l.Size, l.HashOffset)
	}
	return p
}

// MinSize is the smallest image l can describe: everything up to
// HashOffset, the verity superblock (one hash block), and the hash tree the
// kernel's dm-verity expects for DataSize/DataBlockSize data blocks. It
// assumes a sha256 (32-byte) digest; with unusable block sizes it returns
// just past HashOffset.
func (l Layout) MinSize() int64 {
	if l.DataBlockSize <= 0 || l.HashBlockSize < 64 || l.DataSize < 0 {
		return l.HashOffset + 1
	}
	blocks := l.DataSize / int64(l.DataBlockSize)
	perBlock := int64(l.HashBlockSize / 32)
	var tree int64
	// Like drivers/md/dm-verity-target.c: levels until one block holds
	// the hashes of the level below; each level rounds up.
	for n := blocks; n > 1; {
		n = (n + perBlock - 1) / perBlock
		tree += n
	}
	return l.HashOffset + int64(l.HashBlockSize) + tree*int64(l.HashBlockSize)
}

// Append pads the squashfs at path to 4 KiB, hashes it and appends the
// superblock and hash tree. The salt and UUID derive from seed, so the same
// squashfs and seed give the same bytes.
func Append(path string, seed []byte) (Layout, *Tree, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return Layout{}, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Layout{}, nil, err
	}
	dataSize := (fi.Size() + BlockSize - 1) / BlockSize * BlockSize
	if err := f.Truncate(dataSize); err != nil {
		return Layout{}, nil, err
	}
	salt := sha256.Sum256(append([]byte("slate verity salt\x00"), seed...))
	var uuid [16]byte
	u := sha256.Sum256(append([]byte("slate verity uuid\x00"), seed...))
	copy(uuid[:], u[:16])
	tree, err := Build(io.NewSectionReader(f, 0, dataSize), dataSize, salt[:], uuid)
	if err != nil {
		return Layout{}, nil, fmt.Errorf("verity: %w", err)
	}
	if _, err := f.Seek(dataSize, io.SeekStart); err != nil {
		return Layout{}, nil, err
	}
	if _, err := tree.WriteTo(f); err != nil {
		return Layout{}, nil, fmt.Errorf("verity: %w", err)
	}
	l := Layout{
		Size: dataSize + int64(tree.Size), DataSize: dataSize, HashOffset: int64(tree.HashOffset),
		RootHash: tree.RootHashHex(), Salt: hex.EncodeToString(tree.Salt), Algorithm: Algorithm,
		DataBlockSize: BlockSize, HashBlockSize: BlockSize,
	}
	return l, tree, f.Sync()
}
