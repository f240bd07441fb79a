package format_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/builder/disk"
	"github.com/slate-os/slate/builder/esp"
	"github.com/slate-os/slate/builder/format"
	"github.com/slate-os/slate/builder/inspect"
	"github.com/slate-os/slate/builder/spec"
	"github.com/slate-os/slate/internal/testtool"
)

var (
	created = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	seed    = sha256.Sum256([]byte("format test"))
)

// testDisk writes a small slate disk: the GPT, an ESP with slot A's boot
// entry, and 2 MiB of data in slot A, half incompressible (as the squashfs a
// real disk has there is), the rest holes.
func testDisk(t *testing.T) (string, disk.Plan) {
	t.Helper()
	plan := disk.NewPlan(disk.Layout{ESPSize: 128 << 20, SlotSize: 8 << 20, StateSize: 8 << 20}, seed[:])
	path := filepath.Join(t.TempDir(), "disk.raw")
	if err := disk.Create(path, plan); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// A compressed root's bytes, then text.
	root := make([]byte, 1<<20)
	rand.NewChaCha8(seed).Read(root)
	root = append(root, bytes.Repeat([]byte("slate writes each format from the raw disk\n"), 1<<20/43)...)
	if _, err := f.WriteAt(root, plan.Part(boot.NumRootA).Start); err != nil {
		t.Fatal(err)
	}
	entry := boot.Entry{Slot: boot.SlotA, Generation: 1, Title: "slate 1.0 (slot A)", Linux: boot.SlotA.KernelPath(),
		Initrd: boot.SlotA.InitrdPath(), Options: "console=ttyS0 slate.slot=a"}
	files := []esp.File{bytesFile(boot.LoaderConf, "timeout 0\n"), bytesFile(boot.EntriesDir+"/"+entry.FileName(), string(entry.Marshal()))}
	e := plan.Part(boot.NumESP)
	if err := esp.Write(f, e.Start, files, esp.Options{Size: e.Size, Label: "ESP", VolumeID: 1, ModTime: created}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path, plan
}

func bytesFile(p, s string) esp.File {
	return esp.File{Path: p, Size: int64(len(s)), Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(s)), nil }}
}

func sum(t *testing.T, path string, n int64) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, n)); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// qemuInfo is what qemu-img info says of a file read as format f.
func qemuInfo(t *testing.T, f, path string) (format string, virtualSize int64, specific json.RawMessage) {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "--output=json", "-f", f, path).Output()
	if err != nil {
		t.Fatalf("qemu-img info -f %s %s: %v", f, path, err)
	}
	var info struct {
		Format      string          `json:"format"`
		VirtualSize int64           `json:"virtual-size"`
		Specific    json.RawMessage `json:"format-specific"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	return info.Format, info.VirtualSize, info.Specific
}

// Every format the spec accepts: written twice from one raw disk, by two
// "builds" with different temporary names, to the same bytes; what the
// platform's tools say of it; and read back (format.Open, slate inspect)
// to the same disk.
func TestFormats(t *testing.T) {
	raw, plan := testDisk(t)
	rawSum := sum(t, raw, plan.Size)
	want, err := inspect.Disk(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(want.Slots) == 0 || want.Slots[0].State != "good" {
		t.Fatalf("the test disk's slot A: %+v", want.Slots)
	}
	if !reflect.DeepEqual(format.Names, []string{"raw", "qcow2", "vhd", "vmdk", "gce", "raw.zst", "raw.xz"}) {
		t.Errorf("formats %q: update this test and configs/README.md", format.Names)
	}
	for _, f := range format.Names {
		t.Run(f, func(t *testing.T) {
			qemu := map[string]string{format.QCOW2: "qcow2", format.VHD: "vpc", format.VMDK: "vmdk"}[f]
			if qemu != "" {
				testtool.Need(t, "qemu-img")
			}
			if f == format.RawXz {
				testtool.Need(t, "xz")
			}
			name := "node." + map[string]string{format.GCE: "tar.gz"}[f]
			if name == "node." {
				name += f
			}
			if err := (&spec.Spec{Outputs: spec.Outputs{Format: f, Disk: name}}).Validate(); err != nil {
				t.Errorf("the spec refuses it: %v", err)
			}
			var outs [2]string
			for i := range outs {
				outs[i] = filepath.Join(t.TempDir(), "."+name+".tmp-"+string(rune('1'+i)))
				var done int64
				err := format.Write(context.Background(), f, raw, outs[i], format.Options{Seed: seed[:], ModTime: created, Name: name,
					Progress: func(n int64) { done = max(done, n) }})
				if err != nil {
					t.Fatal(err)
				}
				if done != plan.Size {
					t.Errorf("progress went to %d bytes of %d", done, plan.Size)
				}
				if i == 0 && qemu != "" {
					time.Sleep(1100 * time.Millisecond) // a timestamp qemu-img wrote would show
				}
			}
			if sum(t, outs[0], 1<<62) != sum(t, outs[1], 1<<62) {
				t.Error("two conversions gave different bytes")
			}
			out := outs[0]
			if got, err := format.Detect(out); err != nil || got != f {
				t.Errorf("Detect = %q, %v", got, err)
			}
			if qemu != "" {
				gotFormat, size, _ := qemuInfo(t, qemu, out)
				if gotFormat != qemu || size != plan.Size {
					t.Errorf("qemu-img info: format %s, virtual size %d; want %s, %d", gotFormat, size, qemu, plan.Size)
				}
				if qemu != "vpc" { // qemu-img check has no checks for vpc
					if out, err := exec.Command("qemu-img", "check", "-f", qemu, out).CombinedOutput(); err != nil {
						t.Errorf("qemu-img check: %v\n%s", err, out)
					}
				}
			}
			checkFormat[f](t, out, raw, plan)

			d, err := format.Open(context.Background(), out)
			if err != nil {
				t.Fatal(err)
			}
			if d.Format != f || d.Size != plan.Size || sum(t, d.Path, d.Size) != rawSum {
				t.Errorf("read back: format %s, %d bytes, same bytes %v; want %s, %d", d.Format, d.Size, sum(t, d.Path, d.Size) == rawSum, f, plan.Size)
			}
			tmp := d.Path
			d.Close()
			if tmp != out {
				if _, err := os.Stat(tmp); !os.IsNotExist(err) {
					t.Errorf("the temporary raw disk %s is left: %v", tmp, err)
				}
			}
			got, err := inspect.Disk(out)
			if err != nil {
				t.Fatal(err)
			}
			if got.Format != f || got.Path != out || !reflect.DeepEqual(got.Disk, want.Disk) || !reflect.DeepEqual(got.Slots, want.Slots) {
				t.Errorf("slate inspect:\n got %s %+v %+v\nwant %+v %+v", got.Format, got.Disk, got.Slots, want.Disk, want.Slots)
			}
			var text strings.Builder
			got.Text(&text)
			if !strings.HasPrefix(text.String(), "disk "+out+" ("+f+", ") {
				t.Errorf("inspect text: %q", strings.SplitN(text.String(), "\n", 2)[0])
			}
		})
	}
}

// checkFormat checks what each format's platform looks for.
var checkFormat = map[string]func(t *testing.T, out, raw string, plan disk.Plan){
	format.Raw: func(t *testing.T, out, raw string, plan disk.Plan) {
		// Holes stay holes.
		if used(t, out) > 16<<20 {
			t.Errorf("a %d MiB copy with 2 MiB of data uses %d MiB", plan.Size>>20, used(t, out)>>20)
		}
	},
	format.QCOW2: func(t *testing.T, out, raw string, plan disk.Plan) {},
	format.VHD: func(t *testing.T, out, raw string, plan disk.Plan) {
		fi, _ := os.Stat(out)
		if fi.Size() != plan.Size+512 || plan.Size%(1<<20) != 0 {
			t.Fatalf("%d bytes for a %d byte disk: want the disk, whole MiB, and a 512-byte footer", fi.Size(), plan.Size)
		}
		if sum(t, out, plan.Size) != sum(t, raw, plan.Size) {
			t.Error("the VHD's data is not the raw disk")
		}
		footer := make([]byte, 512)
		f, _ := os.Open(out)
		f.ReadAt(footer, plan.Size)
		f.Close()
		be := binary.BigEndian
		if string(footer[:8]) != "conectix" || be.Uint32(footer[60:]) != 2 || be.Uint64(footer[48:]) != uint64(plan.Size) {
			t.Errorf("footer: cookie %q, type %d, size %d", footer[:8], be.Uint32(footer[60:]), be.Uint64(footer[48:]))
		}
		if got, want := be.Uint32(footer[24:]), uint32(created.Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC))/time.Second); got != want {
			t.Errorf("footer timestamp %d, want the build's creation time %d", got, want)
		}
		if id := footer[68:84]; string(id) == string(make([]byte, 16)) || id[6]>>4 != 4 {
			t.Errorf("footer unique ID %x: want a version 4 UUID from the seed", id)
		}
	},
	format.VMDK: func(t *testing.T, out, raw string, plan disk.Plan) {
		_, _, specific := qemuInfo(t, "vmdk", out)
		if !strings.Contains(string(specific), `"create-type":"streamOptimized"`) && !strings.Contains(string(specific), `"create-type": "streamOptimized"`) {
			t.Errorf("qemu-img info: %s", specific)
		}
		head := make([]byte, 4096)
		f, _ := os.Open(out)
		f.ReadAt(head, 0)
		f.Close()
		if !bytes.Contains(head, fmt.Appendf(nil, "\nRW %d SPARSE \"node.vmdk\"\n", plan.Size/512)) {
			t.Errorf("the descriptor does not name node.vmdk as its extent (%d sectors):\n%s", plan.Size/512, bytes.TrimRight(head[512:], "\x00"))
		}
	},
	format.GCE: func(t *testing.T, out, raw string, plan disk.Plan) {
		f, _ := os.Open(out)
		defer f.Close()
		gz, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		hdr := make([]byte, 10)
		f.ReadAt(hdr, 0)
		if hdr[3] != 0 || string(hdr[4:8]) != "\x00\x00\x00\x00" {
			t.Errorf("gzip header % x: want no name (flags 0) and no time (MTIME 0)", hdr)
		}
		tr := tar.NewReader(gz)
		h, err := tr.Next()
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != "disk.raw" || h.Size != plan.Size || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(created) || h.Format != tar.FormatGNU || h.Typeflag != tar.TypeReg {
			t.Errorf("tar entry %+v", h)
		}
		io.Copy(io.Discard, tr)
		if _, err := tr.Next(); err != io.EOF {
			t.Errorf("more than disk.raw in the archive: %v", err)
		}
		// GNU tar reads it as GCE's importer does.
		if testtool.Have(t, "tar") {
			ls, err := exec.Command("tar", "--list", "--verbose", "--numeric-owner", "--gzip", "--file", out).CombinedOutput()
			if err != nil || !strings.HasPrefix(string(ls), "-rw-r--r-- 0/0") || !strings.Contains(string(ls), " 2026-01-02 03:04 disk.raw") {
				t.Errorf("tar --list: %v\n%s", err, ls)
			}
		}
	},
	format.RawZstd: func(t *testing.T, out, raw string, plan disk.Plan) {
		if testtool.Have(t, "zstd") {
			if b, err := exec.Command("zstd", "--test", "--quiet", out).CombinedOutput(); err != nil {
				t.Errorf("zstd --test: %v\n%s", err, b)
			}
		}
	},
	format.RawXz: func(t *testing.T, out, raw string, plan disk.Plan) {
		if b, err := exec.Command("xz", "--test", "--quiet", out).CombinedOutput(); err != nil {
			t.Errorf("xz --test: %v\n%s", err, b)
		}
		// Without the xz tool, inspect reads it in Go.
		t.Run("without the xz tool", func(t *testing.T) {
			t.Setenv("PATH", t.TempDir())
			d, err := format.Open(context.Background(), out)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if d.Size != plan.Size || sum(t, d.Path, d.Size) != sum(t, raw, plan.Size) {
				t.Error("another disk")
			}
		})
	},
}

// used is the space a file takes on disk.
func used(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestDetect(t *testing.T) {
	dir := t.TempDir()
	footer := make([]byte, 512)
	copy(footer, "conectix")
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"qcow2", []byte("QFI\xfb\x00\x00\x00\x03"), format.QCOW2},
		{"vmdk sparse", []byte("KDMV\x01\x00\x00\x00"), format.VMDK},
		{"vmdk descriptor", []byte("# Disk DescriptorFile\nversion=1\n"), format.VMDK},
		{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x04}, format.RawZstd},
		{"xz", []byte("\xfd7zXZ\x00\x00\x04"), format.RawXz},
		{"gzip", []byte{0x1f, 0x8b, 0x08, 0}, format.GCE},
		{"fixed vhd", append(make([]byte, 1<<20), footer...), format.VHD},
		{"dynamic vhd", append([]byte("conectix"), make([]byte, 1024)...), "vhd (dynamic)"},
		{"raw", make([]byte, 1<<20), format.Raw},
		{"short", []byte("x"), format.Raw},
		{"empty", nil, format.Raw},
	} {
		p := filepath.Join(dir, tc.name+".img") // the name says nothing
		if err := os.WriteFile(p, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := format.Detect(p); err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

// What Open refuses, and what a conversion refuses, each saying why.
func TestErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A fixed VHD whose footer is damaged, or says a size the file lacks.
	footer := make([]byte, 512)
	copy(footer, "conectix")
	binary.BigEndian.PutUint32(footer[60:], 2)
	binary.BigEndian.PutUint64(footer[48:], 1<<20)
	badSum := write("bad-sum.vhd", append(make([]byte, 1<<20), footer...))
	setSum := func(f []byte) []byte {
		f = append([]byte{}, f...)
		var s uint32
		for i, b := range f {
			if i < 64 || i >= 68 {
				s += uint32(b)
			}
		}
		binary.BigEndian.PutUint32(f[64:], ^s)
		return f
	}
	tooBig := setSum(footer)
	binary.BigEndian.PutUint64(tooBig[48:], 2<<20)
	tooBig = setSum(tooBig)
	big := write("too-big.vhd", append(make([]byte, 1<<20), tooBig...))
	good := write("ok.vhd", append(make([]byte, 1<<20), setSum(footer)...))

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "image.raw", Size: 3, Mode: 0o644})
	tw.Write([]byte("abc"))
	tw.Close()
	zw.Close()
	noDisk := write("other.tar.gz", gz.Bytes())

	for _, tc := range []struct{ path, want string }{
		{badSum, "bad-sum.vhd: VHD footer checksum"},
		{big, "too-big.vhd: the VHD footer says the disk is 2097152 bytes, the file holds 1048576 before the footer"},
		{noDisk, "other.tar.gz (gce): no disk.raw in the archive: not a GCE image"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		d, err := format.Open(context.Background(), tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%s) = %v, want %q", filepath.Base(tc.path), err, tc.want)
		}
		if d != nil {
			d.Close()
		}
	}
	if d, err := format.Open(context.Background(), good); err != nil || d.Size != 1<<20 || d.Path != good {
		t.Errorf("a good fixed VHD: %+v, %v", d, err)
	}

	// Azure takes whole MiB only.
	odd := write("odd.raw", make([]byte, 1<<20+512))
	testtool.Need(t, "qemu-img")
	err := format.Write(context.Background(), format.VHD, odd, filepath.Join(dir, "odd.vhd"), format.Options{})
	if err == nil || !strings.Contains(err.Error(), "vhd: "+odd+" is 1049088 bytes, not a whole number of MiB as Azure requires") {
		t.Errorf("VHD of an odd size: %v", err)
	}
	if err := format.Write(context.Background(), "vdi", odd, filepath.Join(dir, "x"), format.Options{}); err == nil || !strings.Contains(err.Error(), `unknown disk format "vdi"`) {
		t.Errorf("unknown format: %v", err)
	}
}
