package verity

import (
	"fmt"
	"io"
)

// StoredRoot is the root hash the tree stored on r after dataSize bytes of
// data says, without reading the data: sha256 of the salt (from the
// superblock) and the top hash block, or of the only data block when the
// data is one block long. Verify(r, dataSize, StoredRoot(...)) then checks
// that the tree and the data agree, pinning a mismatch on its block;
// Build over the data gives the root hash the data should have. Nothing
// here is trusted: slate inspect reads an extension image with it.
func StoredRoot(r io.ReaderAt, dataSize int64) ([]byte, error) {
	if err := checkDataSize(dataSize); err != nil {
		return nil, err
	}
	blocks := uint64(dataSize) / BlockSize
	salt, err := readSuperblock(r, dataSize, blocks)
	if err != nil {
		return nil, err
	}
	// The top level (one block) comes first after the superblock's block;
	// with one data block there is no tree and the block is the root's.
	at, what := dataSize+BlockSize, "top hash block"
	if len(levelBlocks(blocks)) == 0 {
		at, what = 0, "data block 0"
	}
	block := make([]byte, BlockSize)
	if err := readAt(r, block, at); err != nil {
		return nil, fmt.Errorf("verity: reading %s at byte %d: %w", what, at, err)
	}
	root := make([]byte, digestSize)
	newHasher(salt).sum(root, block)
	return root, nil
}
