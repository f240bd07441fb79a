package verity

import (
	"bytes"
	"strings"
	"testing"
)

func TestStoredRoot(t *testing.T) {
	for _, blocks := range []int{1, 2, 128, 129, 300} {
		data := pseudoRandom(uint64(blocks), blocks*BlockSize)
		tr, err := Build(bytes.NewReader(data), int64(len(data)), []byte("salt"), [16]byte{1})
		if err != nil {
			t.Fatal(err)
		}
		img := append(bytes.Clone(data), treeBytes(t, tr)...)
		got, err := StoredRoot(bytes.NewReader(img), int64(len(data)))
		if err != nil || !bytes.Equal(got, tr.RootHash) {
			t.Errorf("%d blocks: %x %v, want %x", blocks, got, err, tr.RootHash)
			continue
		}
		// The stored root is the tree's: a changed top block changes it,
		// and Verify against it then finds the block below that disagrees.
		at := len(data) + BlockSize
		if blocks == 1 {
			at = 0
		}
		img[at+7] ^= 1
		bad, err := StoredRoot(bytes.NewReader(img), int64(len(data)))
		if err != nil || bytes.Equal(bad, tr.RootHash) {
			t.Errorf("%d blocks, top block changed: %x %v", blocks, bad, err)
		}
		if blocks > 1 {
			if err := Verify(bytes.NewReader(img), int64(len(data)), bad); err == nil || !strings.Contains(err.Error(), "does not match its hash") {
				t.Errorf("%d blocks, top block changed: Verify: %v", blocks, err)
			}
		}
	}
	if _, err := StoredRoot(bytes.NewReader(make([]byte, 3*BlockSize)), BlockSize); err == nil || !strings.Contains(err.Error(), "no verity magic") {
		t.Errorf("no superblock: %v", err)
	}
	if _, err := StoredRoot(bytes.NewReader(nil), 100); err == nil {
		t.Error("unaligned data size accepted")
	}
}
