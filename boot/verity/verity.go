// Package verity builds and checks dm-verity hash trees in pure Go, in the
// exact on-disk format that cryptsetup's veritysetup writes and the Linux
// dm-verity target reads.
//
// slate fixes every parameter a user could vary with veritysetup: format
// (hash type) 1, sha256, 4096-byte data and hash blocks, and an on-disk
// superblock. Fixing them keeps the kernel command line down to a root hash
// and makes trees reproducible: the same data, salt and UUID always give the
// same bytes, and those bytes are the ones `veritysetup format --salt=…
// --uuid=…` writes.
//
// A slot partition holds, in order:
//
//	data (the squashfs, padded to 4 KiB) | superblock block | hash tree
//	0                                   HashOffset          HashOffset+4096
//
// The superblock is 512 bytes at HashOffset, alone in its 4 KiB block (the
// rest of that block is zero). The tree follows, its levels laid out top
// level (the single block whose hash is the root hash) first, down to the
// level that hashes the data blocks. Each hash block holds 128 sha256 digests
// and is zero-padded; every digest is sha256(salt || block), the salt coming
// first as format 1 requires (format 0, Chrome OS, appends it instead).
//
// Why the superblock: veritysetup verify/open and systemd-veritysetup read
// the salt and sizes from it, so a slot stays inspectable with stock tools.
// The kernel never reads it: the init passes everything in the table line
// (see Table). The superblock is not covered by the root hash, but that is
// harmless: a changed salt changes every digest, so the root no longer
// matches, and the sizes come from the table, not from the superblock.
package verity

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Fixed parameters (see the package documentation for why they are fixed).
const (
	// BlockSize is both the data block size and the hash block size. 4096
	// is veritysetup's default and the page size the kernel needs a data
	// block not to exceed.
	BlockSize = 4096
	// Algorithm is the hash, named as veritysetup and the kernel name it.
	Algorithm = "sha256"
	// HashType is the verity format version: 1 prepends the salt.
	HashType = 1
	// MaxSaltSize is the most salt the superblock can hold.
	MaxSaltSize = 256

	digestSize     = sha256.Size
	hashesPerBlock = BlockSize / digestSize // 128: 32-byte digests need no per-digest padding
	superblockSize = 512
	// readChunk is how many data blocks Build and Verify read at once:
	// exactly the blocks one level-0 hash block covers.
	readChunk = hashesPerBlock
)

var superblockMagic = [8]byte{'v', 'e', 'r', 'i', 't', 'y', 0, 0}

// Tree is a complete dm-verity hash tree for one data image, held in memory
// (about 1/127 of the data size) until it is written out with WriteTo.
type Tree struct {
	// RootHash is sha256 over the top hash block (or over the only data
	// block when the data is one block long and the tree has no levels).
	// It goes on the kernel command line; everything else is derived.
	RootHash []byte
	// Salt is prepended to every hashed block. The builder derives it from
	// the image digest so that builds are reproducible.
	Salt []byte
	// UUID identifies the hash device in the superblock (veritysetup dump
	// shows it); nothing verifies it.
	UUID [16]byte
	// DataBlocks is the number of 4 KiB data blocks covered.
	DataBlocks uint64
	// HashOffset is the byte offset of the superblock when the tree is
	// stored right after the data on the same device: the data size.
	HashOffset uint64
	// Size is the byte length WriteTo writes: one superblock block plus
	// the hash blocks.
	Size uint64

	// levels[0] hashes the data blocks, levels[len-1] is the single top
	// block. Each is a whole number of zero-padded hash blocks.
	levels [][]byte
}

// levelBlocks returns how many hash blocks each tree level has, bottom
// level (the one hashing the data) first. It matches cryptsetup's
// hash_levels() and the kernel's dm_verity_ctr(): a level is added while the
// level below still has more than one block, so one data block needs no
// tree at all (its own digest is the root hash), 2..128 data blocks need one
// level, 129..16384 need two, and so on.
func levelBlocks(dataBlocks uint64) []uint64 {
	var sizes []uint64
	for n := dataBlocks; n > 1; {
		n = (n + hashesPerBlock - 1) / hashesPerBlock
		sizes = append(sizes, n)
	}
	return sizes
}

// TreeSize returns the bytes the superblock and the hash tree take for
// dataSize bytes of data (a multiple of BlockSize), without reading any data:
// the builder sizes slot partitions with it before building.
func TreeSize(dataSize int64) (uint64, error) {
	if err := checkDataSize(dataSize); err != nil {
		return 0, err
	}
	return treeSize(uint64(dataSize) / BlockSize), nil
}

func treeSize(dataBlocks uint64) uint64 {
	n := uint64(1) // the superblock's block
	for _, s := range levelBlocks(dataBlocks) {
		n += s
	}
	return n * BlockSize
}

func checkDataSize(dataSize int64) error {
	if dataSize <= 0 || dataSize%BlockSize != 0 {
		return fmt.Errorf("verity: data size %d is not a positive multiple of %d (the caller pads the image)", dataSize, BlockSize)
	}
	return nil
}

// hasher computes format-1 digests: sha256(salt || block).
type hasher struct {
	h    hash.Hash
	salt []byte
}

func newHasher(salt []byte) *hasher { return &hasher{h: sha256.New(), salt: salt} }

// sum writes the digest of block into dst[:32].
func (h *hasher) sum(dst, block []byte) {
	h.h.Reset()
	h.h.Write(h.salt)
	h.h.Write(block)
	h.h.Sum(dst[:0])
}

// Build reads exactly dataSize bytes from r (a multiple of BlockSize: the
// caller pads the image) and computes the hash tree over them.
//
// The data is streamed once, 512 KiB at a time; only the digests are kept,
// so memory grows by 1/128 of the data size and nothing is written anywhere
// until WriteTo. salt may be empty (veritysetup's "--salt=-") or at most
// MaxSaltSize bytes; 32 bytes is typical.
func Build(r io.Reader, dataSize int64, salt []byte, uuid [16]byte) (*Tree, error) {
	if err := checkDataSize(dataSize); err != nil {
		return nil, err
	}
	if len(salt) > MaxSaltSize {
		return nil, fmt.Errorf("verity: salt is %d bytes, at most %d fit the superblock", len(salt), MaxSaltSize)
	}
	blocks := uint64(dataSize) / BlockSize
	sizes := levelBlocks(blocks)
	t := &Tree{
		Salt:       bytes.Clone(salt),
		UUID:       uuid,
		DataBlocks: blocks,
		HashOffset: uint64(dataSize),
		Size:       treeSize(blocks),
		levels:     make([][]byte, len(sizes)),
	}
	if t.Salt == nil {
		t.Salt = []byte{}
	}
	h := newHasher(t.Salt)

	// Digests of the data blocks: level 0, or the root itself for a
	// one-block image.
	var bottom []byte
	if len(sizes) > 0 {
		bottom = make([]byte, sizes[0]*BlockSize)
		t.levels[0] = bottom
	} else {
		bottom = make([]byte, digestSize)
	}
	buf := make([]byte, readChunk*BlockSize)
	for done := uint64(0); done < blocks; {
		n := min(readChunk, blocks-done)
		if got, err := io.ReadFull(r, buf[:n*BlockSize]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("verity: reading data block %d of %d: %w", done+uint64(got)/BlockSize, blocks, err)
		}
		for i := range n {
			h.sum(bottom[(done+i)*digestSize:], buf[i*BlockSize:(i+1)*BlockSize])
		}
		done += n
	}

	// Each upper level hashes the whole (padded) blocks of the one below.
	for l := 1; l < len(sizes); l++ {
		below := t.levels[l-1]
		level := make([]byte, sizes[l]*BlockSize)
		for j := range uint64(len(below)) / BlockSize {
			h.sum(level[j*digestSize:], below[j*BlockSize:(j+1)*BlockSize])
		}
		t.levels[l] = level
	}

	t.RootHash = make([]byte, digestSize)
	if len(sizes) == 0 {
		copy(t.RootHash, bottom)
	} else {
		h.sum(t.RootHash, t.levels[len(sizes)-1]) // the top level is one block
	}
	return t, nil
}

// superblock returns the superblock's 4 KiB block: the 512-byte veritysetup
// header (little-endian, layout of struct verity_sb in cryptsetup's
// lib/verity/verity.c) followed by zeros.
func (t *Tree) superblock() []byte {
	b := make([]byte, BlockSize)
	le := binary.LittleEndian
	copy(b[0:8], superblockMagic[:])
	le.PutUint32(b[8:], 1)         // superblock version
	le.PutUint32(b[12:], HashType) // 1: normal (0 would be Chrome OS)
	copy(b[16:32], t.UUID[:])
	copy(b[32:64], Algorithm) // NUL-padded, 32 bytes
	le.PutUint32(b[64:], BlockSize)
	le.PutUint32(b[68:], BlockSize)
	le.PutUint64(b[72:], t.DataBlocks)
	le.PutUint16(b[80:], uint16(len(t.Salt)))
	// 6 bytes of padding, then the salt (256 bytes), then 168 bytes of padding.
	copy(b[88:88+MaxSaltSize], t.Salt)
	return b
}

// WriteTo writes the superblock block and then the hash blocks, top level
// first: the bytes that belong at HashOffset on the slot, and exactly what
// veritysetup format writes to a fresh hash device. It writes t.Size bytes.
func (t *Tree) WriteTo(w io.Writer) (int64, error) {
	var total int64
	n, err := w.Write(t.superblock())
	total += int64(n)
	if err != nil {
		return total, err
	}
	for l := len(t.levels) - 1; l >= 0; l-- {
		n, err := w.Write(t.levels[l])
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// RootHashHex is the root hash as the kernel command line and veritysetup
// spell it.
func (t *Tree) RootHashHex() string { return hex.EncodeToString(t.RootHash) }

// SaltHex is the salt as the table line and veritysetup spell it ("-" when
// there is none).
func (t *Tree) SaltHex() string { return saltHex(t.Salt) }

func saltHex(salt []byte) string {
	if len(salt) == 0 {
		return "-"
	}
	return hex.EncodeToString(salt)
}

// HashStartBlock is the table's hash_start_block when the tree lives on the
// data device right after the data: the superblock's block is skipped, as
// veritysetup does (VERITY_hash_offset_block rounds offset+512 up to a block).
func (t *Tree) HashStartBlock() uint64 { return t.HashOffset/BlockSize + 1 }

// Table returns the dm-verity target parameters the init hands to
// device-mapper (the "verity" target line without its start and length):
//
//	1 <data_dev> <hash_dev> 4096 4096 <data_blocks> <hash_start_block> sha256 <root> <salt>
//
// hashStartBlock counts hash-block units from the start of hashDev to the
// first tree block, so it must skip the superblock: with the tree on the data
// device it is Tree.HashStartBlock(). An empty saltHex becomes "-", the
// kernel's spelling of no salt. The device-mapper target length in 512-byte
// sectors is dataBlocks*8.
func Table(dataDev, hashDev string, dataBlocks, hashStartBlock uint64, rootHex, saltHex string) string {
	if saltHex == "" {
		saltHex = "-"
	}
	return fmt.Sprintf("%d %s %s %d %d %d %d %s %s %s",
		HashType, dataDev, hashDev, BlockSize, BlockSize, dataBlocks, hashStartBlock, Algorithm, rootHex, saltHex)
}

// readAt fills p from r at off. A ReaderAt may return io.EOF along with a
// full read at the end of its data; that is not an error here.
func readAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readSuperblock reads and checks the superblock at off, which must cover
// dataBlocks, and returns its salt.
func readSuperblock(r io.ReaderAt, off int64, dataBlocks uint64) ([]byte, error) {
	sb, err := ReadSuperblock(r, off)
	if err != nil {
		return nil, err
	}
	if sb.DataBlocks != dataBlocks {
		return nil, fmt.Errorf("verity: superblock at byte %d: %d data blocks, want %d", off, sb.DataBlocks, dataBlocks)
	}
	return sb.Salt, nil
}

// Verify checks data and tree as Build and WriteTo laid them out on r (data,
// then the superblock at dataSize, then the tree) against rootHash; the salt
// comes from the superblock, as with veritysetup verify. The agent runs it
// after writing a slot.
//
// It works top down, as the kernel does: the top hash block against the
// root, then each level's blocks against the verified level above, then the
// data blocks. So a mismatch is pinned on the block that is actually wrong
// (a damaged tree is not reported as damaged data), and the error names it.
// Every tree byte is checked, padding included, because whole hash blocks
// are hashed. Memory stays flat: 512 KiB of children and one parent block.
func Verify(r io.ReaderAt, dataSize int64, rootHash []byte) error {
	if err := checkDataSize(dataSize); err != nil {
		return err
	}
	if len(rootHash) != digestSize {
		return fmt.Errorf("verity: root hash is %d bytes, want %d", len(rootHash), digestSize)
	}
	blocks := uint64(dataSize) / BlockSize
	salt, err := readSuperblock(r, dataSize, blocks)
	if err != nil {
		return err
	}
	h := newHasher(salt)
	sizes := levelBlocks(blocks)

	// Byte offset of each level; the top level comes first after the
	// superblock block.
	offsets := make([]int64, len(sizes))
	pos := dataSize + BlockSize
	for l := len(sizes) - 1; l >= 0; l-- {
		offsets[l] = pos
		pos += int64(sizes[l]) * BlockSize
	}

	digest := make([]byte, digestSize)
	if len(sizes) == 0 {
		block := make([]byte, BlockSize)
		if err := readAt(r, block, 0); err != nil {
			return fmt.Errorf("verity: reading data block 0: %w", err)
		}
		if h.sum(digest, block); !bytes.Equal(digest, rootHash) {
			return errors.New("verity: data block 0 (the only one) does not match the root hash")
		}
		return nil
	}

	top := len(sizes) - 1
	block := make([]byte, BlockSize)
	if err := readAt(r, block, offsets[top]); err != nil {
		return fmt.Errorf("verity: reading top hash block (level %d) at byte %d: %w", top, offsets[top], err)
	}
	if h.sum(digest, block); !bytes.Equal(digest, rootHash) {
		return fmt.Errorf("verity: top hash block (level %d, byte %d) does not match the root hash (wrong root hash, salt or tree)", top, offsets[top])
	}

	parent := block
	children := make([]byte, readChunk*BlockSize)
	for l := top; l >= 0; l-- {
		// Level l holds the digests of the blocks of level l-1, or of the
		// data for level 0. Parent block p covers children p*128...
		var childOff int64
		var childCount uint64
		what := "data block"
		if l == 0 {
			childCount = blocks
		} else {
			childOff, childCount = offsets[l-1], sizes[l-1]
			what = fmt.Sprintf("hash block (level %d)", l-1)
		}
		for p := range sizes[l] {
			if err := readAt(r, parent, offsets[l]+int64(p)*BlockSize); err != nil {
				return fmt.Errorf("verity: reading hash block %d of level %d: %w", p, l, err)
			}
			first := p * hashesPerBlock
			n := min(hashesPerBlock, childCount-first)
			at := childOff + int64(first)*BlockSize
			if err := readAt(r, children[:n*BlockSize], at); err != nil {
				return fmt.Errorf("verity: reading %s %d at byte %d: %w", what, first, at, err)
			}
			for i := range n {
				h.sum(digest, children[i*BlockSize:(i+1)*BlockSize])
				if !bytes.Equal(digest, parent[i*digestSize:(i+1)*digestSize]) {
					return fmt.Errorf("verity: %s %d at byte %d does not match its hash", what, first+i, at+int64(i)*BlockSize)
				}
			}
		}
	}
	return nil
}

// Superblock is what a veritysetup superblock says about the tree after it
// (only the fields slate does not fix; ReadSuperblock checks the rest).
type Superblock struct {
	// DataBlocks is the number of 4 KiB data blocks the tree covers.
	DataBlocks uint64
	// Salt is prepended to every hashed block (empty: no salt).
	Salt []byte
	// UUID is the hash device's UUID.
	UUID [16]byte
}

// SaltHex is the salt as the table line spells it ("-" when there is none).
func (s *Superblock) SaltHex() string { return saltHex(s.Salt) }

// ReadSuperblock reads the superblock at off (a slot's hash offset, the
// 4 KiB-aligned end of its data) and checks that it has slate's fixed
// parameters: version 1, format 1, sha256, 4 KiB blocks. The init reads the
// data size and salt from it; nothing in it is trusted beyond that, as a
// wrong size or salt makes the tree miss the root hash (see the package
// documentation).
func ReadSuperblock(r io.ReaderAt, off int64) (*Superblock, error) {
	b := make([]byte, superblockSize)
	if err := readAt(r, b, off); err != nil {
		return nil, fmt.Errorf("verity: reading superblock at byte %d: %w", off, err)
	}
	le := binary.LittleEndian
	bad := func(format string, a ...any) error {
		return fmt.Errorf("verity: superblock at byte %d: "+format, append([]any{off}, a...)...)
	}
	switch {
	case !bytes.Equal(b[0:8], superblockMagic[:]):
		return nil, bad("no verity magic (is the tree written at the data size?)")
	case le.Uint32(b[8:]) != 1:
		return nil, bad("version %d, want 1", le.Uint32(b[8:]))
	case le.Uint32(b[12:]) != HashType:
		return nil, bad("hash type %d, want %d", le.Uint32(b[12:]), HashType)
	case string(bytes.TrimRight(b[32:64], "\x00")) != Algorithm:
		return nil, bad("algorithm %q, want %q", bytes.TrimRight(b[32:64], "\x00"), Algorithm)
	case le.Uint32(b[64:]) != BlockSize || le.Uint32(b[68:]) != BlockSize:
		return nil, bad("block sizes %d/%d, want %d", le.Uint32(b[64:]), le.Uint32(b[68:]), BlockSize)
	case le.Uint64(b[72:]) == 0:
		return nil, bad("no data blocks")
	case le.Uint16(b[80:]) > MaxSaltSize:
		return nil, bad("salt size %d", le.Uint16(b[80:]))
	}
	sb := &Superblock{DataBlocks: le.Uint64(b[72:]), Salt: bytes.Clone(b[88 : 88+int(le.Uint16(b[80:]))])}
	copy(sb.UUID[:], b[16:32])
	return sb, nil
}
