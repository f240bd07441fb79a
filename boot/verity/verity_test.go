package verity

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/slate-os/slate/internal/testtool"
)

// pseudoRandom returns n reproducible pseudo-random bytes.
func pseudoRandom(seed uint64, n int) []byte {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

func uuidString(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func treeBytes(t testing.TB, tr *Tree) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := tr.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) || uint64(n) != tr.Size {
		t.Fatalf("WriteTo reported %d bytes, wrote %d, Tree.Size is %d", n, buf.Len(), tr.Size)
	}
	return buf.Bytes()
}

// Known answers computed with veritysetup 2.6.1, so the format is pinned even
// where veritysetup is not installed:
//
//	veritysetup format --salt=00112233 zeros-1-block hash
//	veritysetup format --salt=- zeros-129-blocks hash
func TestKnownAnswers(t *testing.T) {
	for _, tc := range []struct {
		blocks int
		salt   string
		root   string
	}{
		{1, "00112233", "7ec8dda1b53ca958f13d08bcb7f8320234bed38c694eaebd9bd43bbfbf4d742f"},
		{129, "", "3e5d285ca1f11edfca6327028471f08b75634ff3361264b88d79ee2e95cacb84"},
	} {
		salt, _ := hex.DecodeString(tc.salt)
		size := int64(tc.blocks) * BlockSize
		tr, err := Build(bytes.NewReader(make([]byte, size)), size, salt, [16]byte{})
		if err != nil {
			t.Fatal(err)
		}
		if got := tr.RootHashHex(); got != tc.root {
			t.Errorf("%d zero blocks, salt %q: root %s, want %s", tc.blocks, tc.salt, got, tc.root)
		}
	}
}

func TestSuperblockLayout(t *testing.T) {
	uuid := [16]byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}
	tr, err := Build(bytes.NewReader(make([]byte, BlockSize)), BlockSize, []byte{0x00, 0x11, 0x22, 0x33}, uuid)
	if err != nil {
		t.Fatal(err)
	}
	b := treeBytes(t, tr)
	// The first 0x60 bytes of what veritysetup 2.6.1 wrote for this input
	// (xxd of the hash device); the rest of the 4 KiB block is zero.
	want, _ := hex.DecodeString("" +
		"7665726974790000010000000100000001234567" + "89abcdef0123456789abcdef" +
		"7368613235360000000000000000000000000000" + "000000000000000000000000" +
		"0010000000100000010000000000000004000000" + "000000000011223300000000")
	if !bytes.Equal(b[:len(want)], want) {
		t.Errorf("superblock:\n got %x\nwant %x", b[:len(want)], want)
	}
	if len(b) != BlockSize || bytes.ContainsFunc(b[len(want):], func(r rune) bool { return r != 0 }) {
		t.Errorf("one-block image: want a single zero-padded superblock block, got %d bytes", len(b))
	}
}

type vsCase struct {
	name   string
	blocks int
	salt   []byte
	levels int
}

func cases() []vsCase {
	salt32 := sha256.Sum256([]byte("slate test salt"))
	return []vsCase{
		{"1-block", 1, salt32[:], 0},
		{"127-blocks", 127, salt32[:], 1},
		{"128-blocks", 128, salt32[:], 1},
		{"129-blocks", 129, salt32[:], 2},
		{"129-blocks-no-salt", 129, nil, 2},
		{"130-blocks-256-byte-salt", 130, pseudoRandom(99, MaxSaltSize), 2},
		{"4MiB", 1024, salt32[:], 2},
		{"3-levels", 128*128 + 1, salt32[:], 3},
	}
}

func needVeritysetup(t *testing.T) string {
	t.Helper()
	return testtool.Path(t, "veritysetup") // the reference tool
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// fields parses veritysetup's "Key:   value" output.
func fields(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m
}

// TestAgainstVeritysetup checks trees against the reference implementation:
// veritysetup must accept what we write, and must write the same bytes and
// print the same root hash for the same data, salt and UUID.
func TestAgainstVeritysetup(t *testing.T) {
	vs := needVeritysetup(t)
	for i, tc := range cases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			size := int64(tc.blocks) * BlockSize
			data := pseudoRandom(uint64(i), int(size))
			var uuid [16]byte
			copy(uuid[:], pseudoRandom(uint64(1000+i), 16))

			tr, err := Build(bytes.NewReader(data), size, tc.salt, uuid)
			if err != nil {
				t.Fatal(err)
			}
			if len(tr.levels) != tc.levels {
				t.Errorf("%d levels, want %d", len(tr.levels), tc.levels)
			}
			if tr.DataBlocks != uint64(tc.blocks) || tr.HashOffset != uint64(size) {
				t.Errorf("DataBlocks %d HashOffset %d, want %d %d", tr.DataBlocks, tr.HashOffset, tc.blocks, size)
			}
			if ts, err := TreeSize(size); err != nil || ts != tr.Size {
				t.Errorf("TreeSize = %d, %v; Tree.Size = %d", ts, err, tr.Size)
			}
			tree := treeBytes(t, tr)
			hashBlocks := len(tree)/BlockSize - 1

			// 1. veritysetup format on separate devices: same root, same bytes.
			dataFile := filepath.Join(dir, "data")
			hashFile := filepath.Join(dir, "hash")
			if err := os.WriteFile(dataFile, data, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := run(t, vs, "format", "--salt="+tr.SaltHex(), "--uuid="+uuidString(uuid), dataFile, hashFile)
			if err != nil {
				t.Fatalf("veritysetup format: %v\n%s", err, out)
			}
			if got := fields(out)["Root hash"]; got != tr.RootHashHex() {
				t.Errorf("root hash: veritysetup %s, ours %s", got, tr.RootHashHex())
			}
			theirs, err := os.ReadFile(hashFile)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(theirs, tree) {
				t.Errorf("hash device differs from veritysetup's: ours %d bytes, theirs %d, first difference at byte %d",
					len(tree), len(theirs), firstDiff(tree, theirs))
			}

			// 2. One file, as on a slot: data, superblock, tree.
			slot := filepath.Join(dir, "slot")
			if err := os.WriteFile(slot, append(bytes.Clone(data), tree...), 0o600); err != nil {
				t.Fatal(err)
			}
			off := "--hash-offset=" + strconv.FormatUint(tr.HashOffset, 10)
			if out, err := run(t, vs, "verify", slot, slot, tr.RootHashHex(), off); err != nil {
				t.Errorf("veritysetup verify rejects our tree: %v\n%s", err, out)
			}
			out, err = run(t, vs, "dump", slot, off)
			if err != nil {
				t.Fatalf("veritysetup dump: %v\n%s", err, out)
			}
			d := fields(out)
			for k, want := range map[string]string{
				"UUID":            uuidString(uuid),
				"Hash type":       "1",
				"Data blocks":     strconv.Itoa(tc.blocks),
				"Data block size": "4096",
				"Hash blocks":     strconv.Itoa(hashBlocks),
				"Hash block size": "4096",
				"Hash algorithm":  "sha256",
				"Salt":            tr.SaltHex(),
			} {
				if d[k] != want {
					t.Errorf("veritysetup dump %s = %q, want %q", k, d[k], want)
				}
			}
			f, err := os.Open(slot)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := Verify(f, size, tr.RootHash); err != nil {
				t.Errorf("Verify of a good slot: %v", err)
			}

			// 3. Damage: one data byte, then one tree byte. Both checkers
			// must refuse, and Verify must name the damaged block.
			bad := tc.blocks / 2
			corrupt(t, slot, int64(bad)*BlockSize+123)
			if err := Verify(f, size, tr.RootHash); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("data block %d ", bad)) {
				t.Errorf("Verify with data block %d damaged: %v", bad, err)
			}
			if out, err := run(t, vs, "verify", slot, slot, tr.RootHashHex(), off); err == nil {
				t.Errorf("veritysetup verify accepts damaged data:\n%s", out)
			}
			corrupt(t, slot, int64(bad)*BlockSize+123) // undo
			if err := Verify(f, size, tr.RootHash); err != nil {
				t.Fatalf("Verify after undoing the damage: %v", err)
			}
			// The last byte of the tree: zero padding of the bottom level,
			// or the superblock block's padding for a one-block image (not
			// covered by the root hash, as in veritysetup).
			if tc.levels > 0 {
				corrupt(t, slot, size+int64(len(tree))-1)
				wantBlock := "hash block"
				if tc.levels == 1 {
					wantBlock = "top hash block"
				}
				if err := Verify(f, size, tr.RootHash); err == nil || !strings.Contains(err.Error(), wantBlock) {
					t.Errorf("Verify with tree padding damaged: %v (want an error naming a %s)", err, wantBlock)
				}
				if out, err := run(t, vs, "verify", slot, slot, tr.RootHashHex(), off); err == nil {
					t.Errorf("veritysetup verify accepts a damaged tree:\n%s", out)
				}
			}
			wrong := bytes.Clone(tr.RootHash)
			wrong[0] ^= 1
			if err := Verify(f, size, wrong); err == nil {
				t.Error("Verify accepts a wrong root hash")
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// corrupt flips the low bit of the byte at off.
func corrupt(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyNamesBlocks checks, without veritysetup, that Verify pins damage
// on the right block at every level of a 3-level tree.
func TestVerifyNamesBlocks(t *testing.T) {
	t.Parallel()
	const blocks = 128*128 + 1
	size := int64(blocks) * BlockSize
	data := make([]byte, size)
	copy(data, pseudoRandom(7, 1<<20))
	tr, err := Build(bytes.NewReader(data), size, []byte("salt"), [16]byte{})
	if err != nil {
		t.Fatal(err)
	}
	img := append(data, treeBytes(t, tr)...)
	if err := Verify(bytes.NewReader(img), size, tr.RootHash); err != nil {
		t.Fatalf("good image: %v", err)
	}
	// Tree layout: superblock, level 2 (1 block), level 1 (2), level 0 (129).
	treeAt := size + BlockSize
	for _, tc := range []struct {
		off  int64
		want string
	}{
		{0, "data block 0 at byte 0 "},
		{size - 1, fmt.Sprintf("data block %d ", blocks-1)},
		{treeAt + 5, "top hash block (level 2"},
		{treeAt + BlockSize + BlockSize + 1, "hash block (level 1) 1 "},
		{treeAt + 3*BlockSize + 100*BlockSize, "hash block (level 0) 100 "},
		{size, "no verity magic"},
	} {
		img[tc.off] ^= 0x80
		err := Verify(bytes.NewReader(img), size, tr.RootHash)
		img[tc.off] ^= 0x80
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("byte %d damaged: got %v, want an error containing %q", tc.off, err, tc.want)
		}
	}
	if err := Verify(bytes.NewReader(img[:len(img)-1]), size, tr.RootHash); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated image: %v", err)
	}
}

func TestBuildErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    io.Reader
		size int64
		salt []byte
	}{
		{"zero size", bytes.NewReader(nil), 0, nil},
		{"unaligned size", bytes.NewReader(make([]byte, 5000)), 5000, nil},
		{"salt too long", bytes.NewReader(make([]byte, BlockSize)), BlockSize, make([]byte, MaxSaltSize+1)},
		{"short input", bytes.NewReader(make([]byte, 3*BlockSize)), 200 * BlockSize, nil},
	} {
		if _, err := Build(tc.r, tc.size, tc.salt, [16]byte{}); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	_, err := Build(bytes.NewReader(make([]byte, 3*BlockSize)), 200*BlockSize, nil, [16]byte{})
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "block 3 of 200") {
		t.Errorf("short input: %v", err)
	}
}

func TestTable(t *testing.T) {
	tr, err := Build(bytes.NewReader(make([]byte, 300*BlockSize)), 300*BlockSize, []byte{0xab, 0xcd}, [16]byte{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.HashStartBlock() != 301 {
		t.Errorf("HashStartBlock = %d, want 301 (300 data blocks, then the superblock)", tr.HashStartBlock())
	}
	got := Table("/dev/vda2", "/dev/vda2", tr.DataBlocks, tr.HashStartBlock(), tr.RootHashHex(), tr.SaltHex())
	want := "1 /dev/vda2 /dev/vda2 4096 4096 300 301 sha256 " + tr.RootHashHex() + " abcd"
	if got != want {
		t.Errorf("Table:\n got %q\nwant %q", got, want)
	}
	if got := Table("/dev/a", "/dev/b", 1, 1, "00", ""); got != "1 /dev/a /dev/b 4096 4096 1 1 sha256 00 -" {
		t.Errorf("Table without salt: %q", got)
	}
}

func TestTreeSize(t *testing.T) {
	for _, tc := range []struct{ blocks, hashBlocks uint64 }{
		{1, 0}, {2, 1}, {128, 1}, {129, 3}, {16384, 129}, {16385, 132},
		{1 << 20, 8192 + 64 + 1}, // 4 GiB of data
	} {
		got, err := TreeSize(int64(tc.blocks) * BlockSize)
		if want := (1 + tc.hashBlocks) * BlockSize; err != nil || got != want {
			t.Errorf("TreeSize(%d blocks) = %d, %v; want %d", tc.blocks, got, err, want)
		}
	}
	if _, err := TreeSize(100); err == nil {
		t.Error("TreeSize(100): no error")
	}
}

// zeroReader yields zeros without holding them.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestBuildMemoryFlat checks that Build streams: for 128 MiB of input it may
// allocate the level hashes (1/128 of the input) and a read buffer, not the
// input.
func TestBuildMemoryFlat(t *testing.T) {
	const size = 128 << 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	tr, err := Build(zeroReader{}, size, make([]byte, 32), [16]byte{})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	if limit := uint64(size/128 + 1<<20); alloc > limit {
		t.Errorf("Build allocated %d bytes for %d bytes of input, want at most %d", alloc, size, limit)
	}
	if tr.DataBlocks != size/BlockSize {
		t.Errorf("DataBlocks = %d", tr.DataBlocks)
	}
}

func BenchmarkBuild(b *testing.B) {
	const size = 16 << 20
	data := pseudoRandom(1, size)
	salt := make([]byte, 32)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(bytes.NewReader(data), size, salt, [16]byte{}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestReadSuperblock(t *testing.T) {
	uuid := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	const blocks = 300
	size := int64(blocks) * BlockSize
	data := pseudoRandom(3, int(size))
	for _, salt := range [][]byte{[]byte("a salt of some length"), nil} {
		tr, err := Build(bytes.NewReader(data), size, salt, uuid)
		if err != nil {
			t.Fatal(err)
		}
		img := append(bytes.Clone(data), treeBytes(t, tr)...)
		sb, err := ReadSuperblock(bytes.NewReader(img), size)
		if err != nil {
			t.Fatal(err)
		}
		if sb.DataBlocks != blocks || !bytes.Equal(sb.Salt, tr.Salt) || sb.UUID != uuid || sb.SaltHex() != tr.SaltHex() {
			t.Errorf("superblock %+v, want %d blocks, salt %x", sb, blocks, tr.Salt)
		}
		// The table built from the superblock is the one built from the tree.
		if a, b := Table("d", "d", sb.DataBlocks, uint64(size)/BlockSize+1, tr.RootHashHex(), sb.SaltHex()),
			Table("d", "d", tr.DataBlocks, tr.HashStartBlock(), tr.RootHashHex(), tr.SaltHex()); a != b {
			t.Errorf("table from the superblock %q, from the tree %q", a, b)
		}
	}

	tr, _ := Build(bytes.NewReader(data), size, []byte("s"), uuid)
	good := append(bytes.Clone(data), treeBytes(t, tr)...)
	for name, c := range map[string]struct {
		off   int64
		patch func(sb []byte)
		want  string
	}{
		"wrong offset": {size - BlockSize, nil, "no verity magic"},
		"past the end": {int64(len(good)), nil, "reading superblock"},
		"version":      {size, func(b []byte) { b[8] = 2 }, "version 2"},
		"hash type":    {size, func(b []byte) { b[12] = 0 }, "hash type 0"},
		"algorithm":    {size, func(b []byte) { copy(b[32:], "sha1\x00\x00") }, `algorithm "sha1"`},
		"block size":   {size, func(b []byte) { b[65] = 2 }, "block sizes"},
		"no data":      {size, func(b []byte) { clear(b[72:80]) }, "no data blocks"},
		"salt size":    {size, func(b []byte) { b[81] = 2 }, "salt size 513"},
	} {
		img := bytes.Clone(good)
		if c.patch != nil {
			c.patch(img[size:])
		}
		_, err := ReadSuperblock(bytes.NewReader(img), c.off)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, c.want)
		}
	}
}
