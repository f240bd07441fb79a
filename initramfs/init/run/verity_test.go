package run

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slate-os/slate/boot/verity"
)

// slotImage lays out a slot as the builder does: a (fake) squashfs of used
// bytes, padded to 4 KiB, then the verity superblock and tree.
func slotImage(t *testing.T, used int) (string, *verity.Tree) {
	t.Helper()
	size := (used + verity.BlockSize - 1) / verity.BlockSize * verity.BlockSize
	data := make([]byte, size)
	for i := range used {
		data[i] = byte(i * 7)
	}
	copy(data, "hsqs")
	binary.LittleEndian.PutUint64(data[squashfsBytesUsed:], uint64(used))
	tr, err := verity.Build(bytes.NewReader(data), int64(size), []byte("salty"), [16]byte{})
	if err != nil {
		t.Fatal(err)
	}
	var img bytes.Buffer
	img.Write(data)
	tr.WriteTo(&img)
	img.Write(make([]byte, 1<<20)) // the rest of the partition
	p := filepath.Join(t.TempDir(), "slot")
	os.WriteFile(p, img.Bytes(), 0o644)
	return p, tr
}

func TestRootVerity(t *testing.T) {
	for _, used := range []int{40960, 40961, 300*4096 - 5} {
		p, tr := slotImage(t, used)
		f, _ := os.Open(p)
		blocks, table, err := rootVerity(f, "/dev/vda2", tr.RootHashHex())
		f.Close()
		if err != nil {
			t.Fatalf("%d bytes: %v", used, err)
		}
		want := verity.Table("/dev/vda2", "/dev/vda2", tr.DataBlocks, tr.HashStartBlock(), tr.RootHashHex(), tr.SaltHex()) + " 1 restart_on_corruption"
		if blocks != tr.DataBlocks || table != want {
			t.Errorf("%d bytes: %d blocks, table %q; want %d, %q", used, blocks, table, tr.DataBlocks, want)
		}
	}
}

func TestRootVerityErrors(t *testing.T) {
	p, tr := slotImage(t, 40961)
	b, _ := os.ReadFile(p)
	for name, c := range map[string]struct {
		patch func([]byte)
		want  string
	}{
		"not squashfs":   {func(b []byte) { copy(b, "ext4") }, `holds no squashfs (it starts with "ext4")`},
		"zero size":      {func(b []byte) { clear(b[40:48]) }, "squashfs says it is 0 bytes long"},
		"shorter":        {func(b []byte) { binary.LittleEndian.PutUint64(b[40:], 4096) }, "no dm-verity tree after the 4096-byte squashfs"},
		"longer":         {func(b []byte) { binary.LittleEndian.PutUint64(b[40:], 1<<40) }, "no dm-verity tree"},
		"block mismatch": {func(b []byte) { binary.LittleEndian.PutUint64(b[tr.HashOffset+72:], 9) }, "covers 9 blocks, the squashfs takes 11"},
	} {
		img := bytes.Clone(b)
		c.patch(img)
		q := filepath.Join(t.TempDir(), "slot")
		os.WriteFile(q, img, 0o644)
		f, _ := os.Open(q)
		_, _, err := rootVerity(f, "/dev/vda2", tr.RootHashHex())
		f.Close()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, c.want)
		}
	}
}
