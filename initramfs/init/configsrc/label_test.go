package configsrc

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/slate-os/slate/internal/testtool"
)

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// mkVfat makes a FAT filesystem image of sizeMiB with mkfs.vfat (fatBits
// 12, 16 or 32), labelled label ("" for none), holding files (with mtools).
func mkVfat(t *testing.T, dir, name string, sizeMiB, fatBits int, label string, files map[string]string) string {
	t.Helper()
	testtool.Need(t, "mkfs.vfat")
	img := filepath.Join(dir, name)
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(int64(sizeMiB) << 20)
	f.Close()
	args := []string{"-F", itoa(fatBits)}
	if fatBits == 32 {
		args = append(args, "-s", "1")
	}
	if label != "" {
		args = append(args, "-n", label)
	}
	run(t, "mkfs.vfat", append(args, img)...)
	made := map[string]bool{}
	for _, n := range sortedKeys(files) {
		testtool.Need(t, "mcopy", "mmd")
		var dirs []string
		for d := filepath.Dir(n); d != "."; d = filepath.Dir(d) {
			dirs = append([]string{d}, dirs...)
		}
		for _, d := range dirs {
			if !made[d] {
				run(t, "mmd", "-i", img, "::"+d)
				made[d] = true
			}
		}
		src := filepath.Join(t.TempDir(), filepath.Base(n))
		os.WriteFile(src, []byte(files[n]), 0o644)
		run(t, "mcopy", "-i", img, src, "::"+n)
	}
	return img
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// mkISO makes an ISO 9660 image with genisoimage, xorriso or mkisofs,
// with Rock Ridge and Joliet names unless plain.
func mkISO(t *testing.T, dir, name, label string, plain bool, files map[string]string) string {
	return mkISOUDF(t, dir, name, label, plain, false, files)
}

// mkISOUDF is mkISO, making a UDF bridge (ISO 9660 and UDF) when udf.
func mkISOUDF(t *testing.T, dir, name, label string, plain, udf bool, files map[string]string) string {
	t.Helper()
	tree := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(tree, 0o755)
	for n, content := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(tree, n)), 0o755)
		os.WriteFile(filepath.Join(tree, n), []byte(content), 0o644)
	}
	img := filepath.Join(dir, name)
	args := []string{"-quiet", "-V", label, "-o", img}
	if !plain {
		args = append(args, "-R", "-J")
	}
	if udf {
		args = append(args, "-udf")
	}
	args = append(args, tree)
	tools := []string{"genisoimage", "mkisofs", "xorrisofs", "xorriso"}
	if udf {
		tools = tools[:2] // xorriso makes no UDF
	}
	switch tool := testtool.Any(t, tools...); tool {
	case "xorriso":
		run(t, "xorriso", append([]string{"-as", "mkisofs"}, args...)...)
	default:
		run(t, tool, args...)
	}
	return img
}

func itoa(n int) string { return strconv.Itoa(n) }

func probeFile(t *testing.T, img string) (Probed, bool) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Probe(f)
}

func TestProbeVfat(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		bits, mib int
	}{{12, 4}, {16, 24}, {32, 40}} {
		img := mkVfat(t, dir, "fat"+itoa(tc.bits)+".img", tc.mib, tc.bits, "SLATE-CONFI", nil)
		p, ok := probeFile(t, img)
		if !ok || p.Type != FSVfat || p.Label != "SLATE-CONFI" || len(p.ID) != 9 || !IsDriveLabel(p.Type, p.Label) {
			t.Errorf("FAT%d: Probe = %+v, %v", tc.bits, p, ok)
		}
		// The boot sector's label alone (Windows leaves it "NO NAME" and
		// writes the root directory's): the root directory's wins.
		b, _ := os.ReadFile(img)
		bpb := bytes.Index(b, []byte("SLATE-CONFI"))
		root := bytes.LastIndex(b, []byte("SLATE-CONFI")) // FAT32 has a backup boot sector at sector 6
		if bpb < 0 || bpb > 0x47 || root < 4096 {
			t.Fatalf("FAT%d: labels at %#x and %#x", tc.bits, bpb, root)
		}
		c := append([]byte(nil), b...)
		copy(c[bpb:], "NO NAME    ")
		os.WriteFile(img, c, 0o644)
		if p, ok := probeFile(t, img); !ok || p.Label != "SLATE-CONFI" {
			t.Errorf("FAT%d with the label only in the root directory: %+v %v", tc.bits, p, ok)
		}
		// No root directory entry: the boot sector's label.
		c = append([]byte(nil), b...)
		c[root] = 0xE5 // deleted
		copy(c[bpb:], "OTHER      ")
		os.WriteFile(img, c, 0o644)
		if p, ok := probeFile(t, img); !ok || p.Label != "OTHER" || IsDriveLabel(p.Type, p.Label) {
			t.Errorf("FAT%d with the label only in the boot sector: %+v %v", tc.bits, p, ok)
		}
	}
	// Other labels, none, lower case.
	for label, want := range map[string]bool{"SLATE-CONF": false, "CIDATA": false, "": false, "slate-confi": true} {
		img := mkVfat(t, dir, "l.img", 4, 12, label, nil)
		p, ok := probeFile(t, img)
		if !ok || p.Type != FSVfat || p.Label != label || IsDriveLabel(p.Type, p.Label) != want {
			t.Errorf("label %q: Probe = %+v, %v; IsDriveLabel %v", label, p, ok, IsDriveLabel(p.Type, p.Label))
		}
	}
}

func TestProbeISO(t *testing.T) {
	dir := t.TempDir()
	for _, label := range []string{"SLATE-CONFIG", "slate-config"} {
		img := mkISO(t, dir, "c.iso", label, false, map[string]string{"slate.yaml": "hostname: x\n"})
		p, ok := probeFile(t, img)
		if !ok || p.Type != FSISO9660 || p.Label != label || len(p.ID) != 16 || !IsDriveLabel(p.Type, p.Label) {
			t.Errorf("ISO %q: Probe = %+v, %v", label, p, ok)
		}
	}
	img := mkISO(t, dir, "o.iso", "cidata", false, nil)
	if p, ok := probeFile(t, img); !ok || p.Label != "cidata" || IsDriveLabel(p.Type, p.Label) {
		t.Errorf("ISO cidata: Probe = %+v, %v", p, ok)
	}
	// The FAT-length label is not enough on ISO 9660, which holds the whole.
	if IsDriveLabel(FSISO9660, "SLATE-CONFI") || !IsDriveLabel(FSISO9660, " SLATE-CONFIG ") {
		t.Error("IsDriveLabel on iso9660")
	}
}

func TestProbeOther(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	cases := map[string]string{
		"empty": write("empty", nil),
		"short": write("short", []byte{0xEB, 0x3C, 0x90}),
		"zeros": write("zeros", make([]byte, 1<<20)),
		"text":  write("text", bytes.Repeat([]byte("SLATE-CONFIG "), 10000)),
	}
	// A boot sector that looks like FAT but whose numbers are nonsense.
	bad := make([]byte, 64<<10)
	copy(bad, []byte{0xEB, 0x3C, 0x90})
	copy(bad[0x2B:], "SLATE-CONFI")
	bad[0x26] = 0x29
	cases["bad-bpb"] = write("bad-bpb", bad)
	if testtool.Have(t, "sgdisk") {
		gpt := write("gpt", make([]byte, 8<<20))
		run(t, "sgdisk", "-o", "-n", "1:2048:+2M", "-c", "1:SLATE-CONFIG", gpt)
		cases["gpt"] = gpt
	}
	if testtool.Have(t, "mkfs.ext4") {
		ext := write("ext4", nil)
		os.Truncate(ext, 8<<20)
		run(t, "mkfs.ext4", "-q", "-L", "SLATE-CONFIG", ext)
		cases["ext4"] = ext
	}
	for name, img := range cases {
		if p, ok := probeFile(t, img); ok {
			t.Errorf("%s: Probe = %+v", name, p)
		}
	}
}
