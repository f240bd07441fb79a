package esp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slate-os/slate/internal/testtool"
)

const (
	mib     = 1 << 20
	espSize = 256 * mib
)

var testOpts = Options{
	Size:     espSize,
	Label:    "ESP",
	VolumeID: 0x5a7e_c0de,
	ModTime:  time.Date(2024, 5, 6, 7, 8, 11, 250_000_000, time.UTC),
}

// sample is the set of files the tests write: nested directories, sizes
// around the 512-byte cluster, an empty file, a 5 MiB random kernel, long
// names, and enough entries in loader/entries that the directory spans
// several clusters.
func sample() map[string][]byte {
	rnd := rand.New(rand.NewChaCha8([32]byte{'s', 'l', 'a', 't', 'e'}))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	m := map[string][]byte{
		"EFI/BOOT/BOOTX64.EFI":          random(123_457),
		"loader/loader.conf":            []byte("timeout 3\neditor no\n"),
		"loader/entries/slate-a.conf":   []byte("title slate\nsort-key slate\nversion 1\nlinux /slate/a/vmlinuz\n"),
		"loader/entries/slate-b+3.conf": []byte("x"), // 1 byte
		"slate/a/vmlinuz":               random(5 * mib),
		"slate/a/initramfs":             random(513),
		"slate/b/vmlinuz":               random(512),
		"slate/b/initramfs":             {}, // 0 bytes
		"slate/b/A Name That Is Much Longer Than Thirteen Characters.efi": random(4096),
	}
	for i := range 20 {
		m[fmt.Sprintf("loader/entries/extra-entry-%02d.conf", i)] = random(i)
	}
	return m
}

func toFiles(m map[string][]byte) []File {
	var fs []File
	for p, b := range m {
		fs = append(fs, File{Path: p, Size: int64(len(b)), Open: func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(b)), nil
		}})
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].Path < fs[j].Path })
	return fs
}

// writeESP writes files into a new sparse file at offset and returns its path.
func writeESP(t *testing.T, offset int64, files []File, opt Options) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "esp.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Write(f, offset, files, opt); err != nil {
		t.Fatal(err)
	}
	return p
}

func needTool(t *testing.T, name, pkg string) {
	t.Helper()
	testtool.Need(t, name) // pkg: testtool names it
}

// fsckClean runs `fsck.fat -n` and fails unless it exits 0 and says nothing
// but its version and its summary: it reports some faults (an uninitialised
// free count) with exit status 0.
func fsckClean(t *testing.T, img string) {
	t.Helper()
	needTool(t, "fsck.fat", "dosfstools")
	out, err := exec.Command("fsck.fat", "-n", img).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.fat -n: %v\n%s", err, out)
	}
	ok := regexp.MustCompile(`^(fsck\.fat \d.*|.*: \d+ files, \d+/\d+ clusters)$`)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !ok.MatchString(line) {
			t.Fatalf("fsck.fat -n complained: %q\n%s", line, out)
		}
	}
}

// mtools runs an mtools command on the ESP at offset in img.
func mtools(t *testing.T, img string, offset int64, cmd string, args ...string) []byte {
	t.Helper()
	needTool(t, cmd, "mtools")
	c := exec.Command(cmd, append([]string{"-i", fmt.Sprintf("%s@@%d", img, offset)}, args...)...)
	c.Env = append(os.Environ(), "LC_ALL=C", "MTOOLSRC=/dev/null")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", cmd, args, err, stderr.Bytes())
	}
	return out
}

func TestFsckClean(t *testing.T) {
	t.Parallel()
	img := writeESP(t, 0, toFiles(sample()), testOpts)
	fsckClean(t, img)

	// The image is sparse: only what was written takes space.
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != espSize {
		t.Errorf("image is %d bytes, want %d", fi.Size(), espSize)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 > 16*mib {
		t.Errorf("image takes %d bytes on disk; it should be sparse", st.Blocks*512)
	}
}

// At 64 MiB (the smallest ESP the spec allows) go-diskfs sizes the FAT a
// sector short of the data area; the post-pass cuts the volume to what the
// FAT maps, and fsck finds nothing to say.
func TestFsckCleanAt64MiB(t *testing.T) {
	t.Parallel()
	opts := testOpts
	opts.Size = 64 * mib
	dir := t.TempDir()
	img := filepath.Join(dir, "esp.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(opts.Size); err != nil {
		t.Fatal(err)
	}
	if err := Write(f, 0, toFiles(sample()), opts); err != nil {
		t.Fatal(err)
	}
	f.Close()
	fsckClean(t, img)
}

// TestMtools reads the ESP back with mtools' independent FAT implementation,
// from inside a larger "disk" whose bytes around the ESP must stay untouched.
func TestMtools(t *testing.T) {
	t.Parallel()
	const offset = 1 * mib
	files := sample()
	disk := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	sentinel := bytes.Repeat([]byte{0xa5}, offset)
	if _, err := f.WriteAt(sentinel, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(sentinel, offset+espSize); err != nil {
		t.Fatal(err)
	}
	if err := Write(f, offset, toFiles(files), testOpts); err != nil {
		t.Fatal(err)
	}
	f.Close()
	raw, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 2*offset+espSize || !bytes.Equal(raw[:offset], sentinel) || !bytes.Equal(raw[offset+espSize:], sentinel) {
		t.Fatal("Write touched bytes outside [offset, offset+Size)")
	}

	// Every file and directory, and nothing else.
	want := map[string]bool{}
	for p := range files {
		want["::/"+p] = true
		for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
			want["::/"+d+"/"] = true
		}
	}
	got := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(mtools(t, disk, offset, "mdir", "-b", "-/", "::"))), "\n") {
		got[l] = true
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("mdir lists\n%v\nwant\n%v", slices.Sorted(keys(got)), slices.Sorted(keys(want)))
	}

	for p, b := range files {
		if out := mtools(t, disk, offset, "mcopy", "-n", "::/"+p, "-"); !bytes.Equal(out, b) {
			t.Errorf("mcopy %s: %d bytes differ from the %d written", p, len(out), len(b))
		}
	}

	// Label, volume ID and every timestamp as mtools reads them.
	info := string(mtools(t, disk, offset, "minfo", "::"))
	for _, w := range []string{`disk label="ESP        "`, "serial number: 5A7EC0DE"} {
		if !strings.Contains(info, w) {
			t.Errorf("minfo does not say %s:\n%s", w, info)
		}
	}
	listing := string(mtools(t, disk, offset, "mdir", "-/", "-a", "::"))
	stamps := regexp.MustCompile(`\d{4}-\d\d-\d\d +\d+:\d\d`).FindAllString(listing, -1)
	if len(stamps) < len(files) {
		t.Fatalf("found %d timestamps in mdir's listing, want at least %d:\n%s", len(stamps), len(files), listing)
	}
	for _, s := range stamps {
		if strings.Join(strings.Fields(s), " ") != "2024-05-06 7:08" {
			t.Fatalf("mdir shows time %q, want 2024-05-06 7:08:\n%s", s, listing)
		}
	}
}

func keys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestReproducible writes the same ESP twice: under different clocks (go-diskfs
// reads SOURCE_DATE_EPOCH in place of the clock, so this fakes two builds
// decades apart), with the files in a different order, once standalone and
// once at an offset inside a disk full of stale bytes. The ESPs must be
// byte-identical.
func TestReproducible(t *testing.T) {
	files := toFiles(sample())

	t.Setenv("SOURCE_DATE_EPOCH", "1000000000")
	a := writeESP(t, 0, files, testOpts)

	const offset = 3 * mib
	disk := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	junk := bytes.Repeat([]byte{0xff}, mib)
	for p := int64(0); p < offset+espSize; p += 16 * mib {
		if _, err := f.WriteAt(junk, p); err != nil {
			t.Fatal(err)
		}
	}
	reversed := slices.Clone(files)
	slices.Reverse(reversed)
	t.Setenv("SOURCE_DATE_EPOCH", "1700000001")
	if err := Write(f, offset, reversed, testOpts); err != nil {
		t.Fatal(err)
	}

	if !sameRange(t, a, 0, disk, offset, espSize) {
		t.Fatal("two builds differ")
	}

	// A different ModTime or VolumeID must change the bytes (the test above
	// would pass for a writer that ignores its inputs).
	opt := testOpts
	opt.ModTime = opt.ModTime.Add(2 * time.Second)
	if sameRange(t, a, 0, writeESP(t, 0, files, opt), 0, espSize) {
		t.Error("ModTime does not reach the image")
	}
	opt = testOpts
	opt.VolumeID++
	if sameRange(t, a, 0, writeESP(t, 0, files, opt), 0, espSize) {
		t.Error("VolumeID does not reach the image")
	}
}

// sameRange reports whether n bytes at offA in file a equal those at offB in b.
func sameRange(t *testing.T, a string, offA int64, b string, offB, n int64) bool {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 4*mib), make([]byte, 4*mib)
	for p := int64(0); p < n; p += int64(len(ba)) {
		m := min(int64(len(ba)), n-p)
		if _, err := fa.ReadAt(ba[:m], offA+p); err != nil {
			t.Fatal(err)
		}
		if _, err := fb.ReadAt(bb[:m], offB+p); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ba[:m], bb[:m]) {
			return false
		}
	}
	return true
}

// TestGoDiskfsFaults shows, on go-diskfs's output alone (no post-pass), each
// fault fixup.go repairs, so that the checks above are known to catch them.
// If it fails after a go-diskfs upgrade, the library has fixed something:
// update the comment in fixup.go (the post-pass is harmless either way).
func TestGoDiskfsFaults(t *testing.T) {
	needTool(t, "fsck.fat", "dosfstools")
	files := toFiles(sample())
	raw := func(epoch string) string {
		t.Setenv("SOURCE_DATE_EPOCH", epoch)
		p := filepath.Join(t.TempDir(), "raw.img")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := build(f, 0, files, testOpts); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := raw("1000000000"), raw("1700000001")
	out, _ := exec.Command("fsck.fat", "-n", a).CombinedOutput()
	for _, fault := range []string{
		"/EFI\n  Invalid '..' entry in the second slot",
		"/loader\n  Invalid '..' entry in the second slot",
		"/slate\n  Invalid '..' entry in the second slot",
		"Free cluster summary uninitialized",
		"/slate/b/initramfs\n  File size is 0 bytes, cluster chain length is > 0 bytes",
	} {
		if !strings.Contains(string(out), fault) {
			t.Errorf("go-diskfs no longer shows %q; fsck.fat says:\n%s", fault, out)
		}
	}
	if sameRange(t, a, 0, b, 0, espSize) {
		t.Error("go-diskfs builds under two clocks are identical: it no longer stamps the time")
	}
	bs := make([]byte, 512)
	f, _ := os.Open(a)
	defer f.Close()
	if _, err := f.ReadAt(bs, 0); err != nil {
		t.Fatal(err)
	}
	if id := binary.LittleEndian.Uint32(bs[bpbVolumeID:]); id != 0 {
		t.Errorf("go-diskfs wrote volume ID %#x, want 0 with reproducible=true", id)
	}
}

func TestOpen(t *testing.T) {
	t.Parallel()
	const offset = 2 * mib
	files := sample()
	disk := writeESP(t, offset, toFiles(files), testOpts)
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e, err := Open(f, offset, espSize)
	if err != nil {
		t.Fatal(err)
	}
	if e.Label() != "ESP" || e.VolumeID() != testOpts.VolumeID {
		t.Errorf("label %q, volume ID %#x; want ESP, %#x", e.Label(), e.VolumeID(), testOpts.VolumeID)
	}
	for dir, want := range map[string][]string{
		"":         {"EFI/", "loader/", "slate/"},
		"/":        {"EFI/", "loader/", "slate/"},
		"EFI/BOOT": {"BOOTX64.EFI"},
		"slate":    {"a/", "b/"},
		"slate/b/": {"A Name That Is Much Longer Than Thirteen Characters.efi", "initramfs", "vmlinuz"},
	} {
		got, err := e.ReadDir(dir)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ReadDir(%q) = %q, %v; want %q", dir, got, err, want)
		}
	}
	if got, _ := e.ReadDir("loader/entries"); len(got) != 22 {
		t.Errorf("loader/entries has %d entries, want 22", len(got))
	}
	for p, b := range files {
		got, err := e.ReadFile(p)
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("ReadFile(%s): %d bytes, %v; want the %d written", p, len(got), err, len(b))
		}
	}
	if got, err := e.ReadFile("/efi/boot/bootx64.efi"); err != nil || !bytes.Equal(got, files["EFI/BOOT/BOOTX64.EFI"]) {
		t.Errorf("case-insensitive ReadFile: %v", err)
	}
	if got, err := e.ReadFile("loader/entries/SLATE-~1.CON"); err != nil || !bytes.Equal(got, files["loader/entries/slate-b+3.conf"]) {
		t.Errorf("ReadFile by 8.3 name: %q, %v", got, err)
	}
	for _, p := range []string{"EFI/BOOT", "nope.conf", "slate/c/vmlinuz"} {
		if _, err := e.ReadFile(p); err == nil {
			t.Errorf("ReadFile(%s) succeeded", p)
		}
	}
	if _, err := Open(f, 0, espSize); err == nil {
		t.Error("Open at the wrong offset succeeded")
	}
}

// TestOpenForeign reads an ESP made by mkfs.fat and mcopy, as a node's ESP
// is after systemd-boot and the agent have written to it.
func TestOpenForeign(t *testing.T) {
	t.Parallel()
	needTool(t, "mkfs.fat", "dosfstools")
	img := filepath.Join(t.TempDir(), "foreign.img")
	if out, err := exec.Command("mkfs.fat", "-F", "32", "-n", "FOREIGN", "-i", "12345678", "-C", img, "65536").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.fat: %v\n%s", err, out)
	}
	src := t.TempDir()
	files := map[string][]byte{"loader/entries/slate-b+2-1.conf": []byte("title b\n"), "empty": nil, "big.bin": bytes.Repeat([]byte("slate"), 100_000)}
	for p, b := range files {
		host := filepath.Join(src, filepath.Base(p))
		if err := os.WriteFile(host, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if d := filepath.Dir(p); d != "." {
			mtools(t, img, 0, "mmd", "-D", "s", "::/"+filepath.Dir(d))
			mtools(t, img, 0, "mmd", "-D", "s", "::/"+d)
		}
		mtools(t, img, 0, "mcopy", host, "::/"+p)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e, err := Open(f, 0, 64*mib)
	if err != nil {
		t.Fatal(err)
	}
	if e.Label() != "FOREIGN" || e.VolumeID() != 0x12345678 {
		t.Errorf("label %q, volume ID %#x", e.Label(), e.VolumeID())
	}
	for p, b := range files {
		if got, err := e.ReadFile(p); err != nil || !bytes.Equal(got, b) {
			t.Errorf("ReadFile(%s): %d bytes, %v; want %d", p, len(got), err, len(b))
		}
	}
}

func TestTooSmall(t *testing.T) {
	t.Parallel()
	kernel := File{Path: "slate/a/vmlinuz", Size: 50 * mib, Open: func() (io.ReadCloser, error) {
		t.Error("the file was opened although it cannot fit")
		return nil, errors.New("unreachable")
	}}
	f, err := os.Create(filepath.Join(t.TempDir(), "esp.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opt := testOpts
	opt.Size = 40 * mib
	err = Write(f, 0, []File{kernel}, opt)
	if err == nil {
		t.Fatal("a 50 MiB file fit in a 40 MiB ESP")
	}
	msg := err.Error()
	t.Log(msg)
	if !strings.Contains(msg, "ESP") || !strings.Contains(msg, "an ESP of 41943040 bytes (40.0 MiB)") ||
		!regexp.MustCompile(`need 52\d{6} bytes \(50\.\d MiB\)`).MatchString(msg) {
		t.Errorf("error does not name the ESP and both sizes: %s", msg)
	}

	opt.Size = 16 * mib
	if err := Write(f, 0, nil, opt); err == nil || !strings.Contains(err.Error(), "33 MiB") {
		t.Errorf("16 MiB (too few clusters for FAT32): %v", err)
	}
}

// TestFull fills an ESP to its last cluster, which the capacity check must
// allow, then asks for one cluster more, which it must refuse; so the check
// counts exactly what go-diskfs allocates.
func TestFull(t *testing.T) {
	t.Parallel()
	opt := testOpts
	opt.Size = 40 * mib
	small := toFiles(map[string][]byte{"loader/loader.conf": []byte("timeout 0\n"), "EFI/BOOT/BOOTX64.EFI": nil})
	dir := t.TempDir()
	try := func(size int64) (string, error) {
		p := filepath.Join(dir, fmt.Sprint(size))
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		big := File{Path: "slate/a/vmlinuz", Size: size, Open: func() (io.ReadCloser, error) {
			return io.NopCloser(io.LimitReader(zeros{}, size)), nil
		}}
		return p, Write(f, 0, append([]File{big}, small...), opt)
	}
	p, err := try(512)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(p)
	l, err := readLayout(f, 0, opt.Size)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := plan(append([]File{{Path: "slate/a/vmlinuz", Size: 512, Open: small[0].Open}}, small...))
	if err != nil {
		t.Fatal(err)
	}
	// The kernel's size that leaves no cluster free; an empty file's
	// cluster is only freed by the post-pass, so it counts here.
	room := (int64(l.clusterCount) - tr.clusters(l.clusterBytes()) + 1) * l.clusterBytes()
	p, err = try(room)
	if err != nil {
		t.Fatalf("%d bytes should fit: %v", room, err)
	}
	fsckClean(t, p)
	if _, err := try(room + 1); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Fatalf("%d bytes should not fit: %v", room+1, err)
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

func TestInvalid(t *testing.T) {
	t.Parallel()
	data := func(p string, n int) File {
		return File{Path: p, Size: int64(n), Open: func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(make([]byte, n))), nil
		}}
	}
	lying := func(p string, size, n int) File { f := data(p, n); f.Size = int64(size); return f }
	small := testOpts
	small.Size = 40 * mib
	for _, c := range []struct {
		name  string
		files []File
		opt   Options
		want  string
	}{
		{"duplicate", []File{data("a.conf", 1), data("a.conf", 2)}, small, `"a.conf" clashes`},
		{"case", []File{data("EFI/BOOT/X.EFI", 1), data("efi/boot/y.efi", 1)}, small, `clashes`},
		{"file and dir", []File{data("slate/a", 1), data("slate/a/vmlinuz", 1)}, small, `clashes`},
		{"absolute", []File{data("/EFI/x", 1)}, small, `bad path`},
		{"empty name", []File{data("EFI//x", 1)}, small, `empty name`},
		{"dot", []File{data("slate/../x", 1)}, small, `starts or ends with a dot`},
		{"hidden", []File{data(".x", 1)}, small, `starts or ends with a dot`},
		{"reserved char", []File{data("a:b", 1)}, small, `not allowed`},
		{"non-ASCII", []File{data("é", 1)}, small, `not allowed`},
		{"no Open", []File{{Path: "x", Size: 1}}, small, `no Open`},
		{"label", []File{data("x", 1)}, Options{Size: small.Size, Label: "esp"}, `label "esp"`},
		{"unaligned size", nil, Options{Size: small.Size + 1}, `multiple of 512`},
		{"short reader", []File{lying("slate/a/vmlinuz", 5000, 4999)}, small, `slate/a/vmlinuz: contents are shorter than its size 5000 (ended after 4999 bytes)`},
		{"long reader", []File{lying("slate/a/vmlinuz", 5000, 5001)}, small, `slate/a/vmlinuz: contents are longer than its size 5000`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f, err := os.Create(filepath.Join(t.TempDir(), "esp.img"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			err = Write(f, 0, c.files, c.opt)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %s", err, c.want)
			}
		})
	}
}

// TestCapacityCount checks, on the sample, that tree.clusters predicts
// exactly the clusters go-diskfs allocates (less the empty files' clusters,
// which the post-pass frees).
func TestCapacityCount(t *testing.T) {
	t.Parallel()
	m := sample()
	img := writeESP(t, 0, toFiles(m), testOpts)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := readLayout(f, 0, espSize)
	if err != nil {
		t.Fatal(err)
	}
	fat := make([]byte, l.fatBytes())
	if _, err := f.ReadAt(fat, l.fatOffset(0)); err != nil {
		t.Fatal(err)
	}
	used := int64(0)
	for c := uint32(2); c < l.clusterCount+2; c++ {
		if binary.LittleEndian.Uint32(fat[4*c:])&fatMask != 0 {
			used++
		}
	}
	tr, err := plan(toFiles(m))
	if err != nil {
		t.Fatal(err)
	}
	empty := int64(0)
	for _, b := range m {
		if len(b) == 0 {
			empty++
		}
	}
	if want := tr.clusters(l.clusterBytes()) - empty; used != want {
		t.Errorf("%d clusters in use, estimate says %d", used, want)
	}
}
