package uki

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/pe"
	"encoding/binary"
	"encoding/pem"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/internal/testtool"
)

// Debian's systemd 252 stub .sbat, which its 256 bytes before .sdmagic
// hold with 30 to spare.
const stubSBAT = sbatHeader + "\nsystemd,1,The systemd Developers,systemd,252,https://systemd.io/\n" +
	"systemd.debian,1,Debian GNU/Linux,systemd,252.39-1~deb12u2,https://bugs.debian.org/\n\x00"

const slateSBAT = "slate,1,slate,slate,1.2.3,https://slate.dev/sbat\n"

type fakeSection struct {
	name string
	va   uint32
	data []byte
}

// fakePE makes a minimal PE32+ EFI application (FileAlignment 0x200,
// SectionAlignment 0x1000), so that most tests need no stub installed.
func fakePE(sizeOfHeaders uint32, secs ...fakeSection) []byte {
	const lfanew, fa, sa = 0x40, 0x200, 0x1000
	b := make([]byte, sizeOfHeaders)
	copy(b, "MZ")
	le.PutUint32(b[0x3c:], lfanew)
	copy(b[lfanew:], "PE\x00\x00")
	coff := lfanew + 4
	le.PutUint16(b[coff:], machineAMD64)
	le.PutUint16(b[coff+2:], uint16(len(secs)))
	le.PutUint16(b[coff+16:], 240)
	le.PutUint16(b[coff+18:], 0x206)
	opt := coff + 20
	le.PutUint16(b[opt:], magicPE32Plus)
	le.PutUint32(b[opt+16:], 0x1000) // entry point
	le.PutUint32(b[opt+optSectionAlignment:], sa)
	le.PutUint32(b[opt+optFileAlignment:], fa)
	le.PutUint32(b[opt+optSizeOfHeaders:], sizeOfHeaders)
	le.PutUint32(b[opt+optCheckSum:], 0x1234)
	le.PutUint16(b[opt+optSubsystem:], subsystemEFIApp)
	le.PutUint32(b[opt+optNumberOfRvaAndSizes:], 16)
	var end uint64
	for i, s := range secs {
		ptr := uint32(len(b))
		b = pad(append(b, s.data...), fa)
		h := b[opt+240+i*sectionHeaderSize:]
		copy(h, s.name)
		le.PutUint32(h[8:], uint32(len(s.data)))
		le.PutUint32(h[12:], s.va)
		le.PutUint32(h[16:], uint32(len(b))-ptr)
		le.PutUint32(h[20:], ptr)
		le.PutUint32(h[36:], scnMemRead|scnCntInitializedData)
		end = max(end, uint64(s.va)+uint64(len(s.data)))
	}
	le.PutUint32(b[opt+optSizeOfImage:], uint32(alignUp(end, sa)))
	return b
}

// fakeStub is a stub whose .sbat has sbatRoom bytes before .sdmagic.
func fakeStub(sbatRoom uint32) []byte {
	return fakePE(0x400,
		fakeSection{".text", 0x1000, bytes.Repeat([]byte{0xcc}, 0x345)},
		fakeSection{".sbat", 0x2000, []byte(stubSBAT)},
		fakeSection{".sdmagic", 0x2000 + sbatRoom, []byte("#### LoaderInfo: systemd-stub 252 ####")})
}

// junk is n reproducible bytes, standing for a kernel or an initramfs.
func junk(n int, seed uint64) []byte {
	b := make([]byte, n)
	mrand.NewChaCha8([32]byte{byte(seed)}).Read(b)
	return b
}

func testSections() Sections {
	return Sections{
		OSRel:   []byte("ID=slate\nVERSION_ID=1.2.3\n"),
		Cmdline: []byte("console=ttyS0 slate.roothash=0123abcd slate.version=1.2.3"),
		Uname:   []byte("6.1.0-50-cloud-amd64"),
		SBAT:    []byte(slateSBAT),
		Initrd:  junk(1<<20+7, 1),
		Linux:   junk(3<<20+123, 2),
	}
}

type named struct {
	name string
	data []byte
}

// added is what Assemble should add for s, in order.
func added(s Sections) []named {
	return []named{{".osrel", s.OSRel}, {".cmdline", append(slices.Clone(s.Cmdline), 0)}, {".uname", s.Uname},
		{".initrd", s.Initrd}, {".linux", s.Linux}}
}

// checkLayout checks a UKI as debug/pe sees it: the stub's sections with
// their data, then want's in order, each at the next SectionAlignment
// boundary after the one before, its VirtualSize its length, its data in
// the file what was put; all data in section order with no gaps; and the
// headers that follow from that. It returns the parsed file.
func checkLayout(t *testing.T, out, stub []byte, want []named) *pe.File {
	t.Helper()
	f, err := pe.NewFile(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("debug/pe: %v", err)
	}
	oh, ok := f.OptionalHeader.(*pe.OptionalHeader64)
	if !ok {
		t.Fatalf("debug/pe: optional header %T", f.OptionalHeader)
	}
	sf, err := pe.NewFile(bytes.NewReader(stub))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range f.Sections {
		names = append(names, s.Name)
	}
	var wantNames []string
	for _, s := range sf.Sections {
		if !slices.ContainsFunc(want, func(w named) bool { return w.name == s.Name }) {
			wantNames = append(wantNames, s.Name)
		}
	}
	for _, w := range want {
		wantNames = append(wantNames, w.name)
	}
	if int(f.NumberOfSections) != len(f.Sections) || !slices.Equal(sortedCopy(names), sortedCopy(wantNames)) ||
		!slices.Equal(names[len(names)-len(want):], wantNames[len(wantNames)-len(want):]) {
		t.Fatalf("sections %q, want %q with the last %d in that order", names, wantNames, len(want))
	}
	for _, s := range sf.Sections {
		if s.Name == ".sbat" {
			continue
		}
		a, _ := s.Data()
		b, _ := f.Section(s.Name).Data()
		if !bytes.Equal(a[:s.VirtualSize], b[:s.VirtualSize]) || f.Section(s.Name).VirtualSize != s.VirtualSize {
			t.Errorf("stub section %s changed", s.Name)
		}
	}
	sa, fa := oh.SectionAlignment, oh.FileAlignment
	var prevEnd uint32
	for i, s := range f.Sections {
		if i > 0 && s.VirtualAddress < prevEnd {
			t.Errorf("%s at %#x overlaps the section before it, which ends at %#x", s.Name, s.VirtualAddress, prevEnd)
		}
		prevEnd = s.VirtualAddress + s.VirtualSize
		if s.VirtualSize > s.Size {
			t.Errorf("%s: VirtualSize %#x > SizeOfRawData %#x", s.Name, s.VirtualSize, s.Size)
		}
	}
	bySize := slices.Clone(f.Sections)
	slices.SortFunc(bySize, func(a, b *pe.Section) int { return int(a.Offset) - int(b.Offset) })
	for i, s := range bySize[1:] {
		if p := bySize[i]; p.Offset+p.Size != s.Offset {
			t.Errorf("gap or overlap in the file: %s at %#x+%#x, then %s at %#x", p.Name, p.Offset, p.Size, s.Name, s.Offset)
		}
	}
	if bySize[0].Offset != oh.SizeOfHeaders || int(bySize[len(bySize)-1].Offset+bySize[len(bySize)-1].Size) != len(out) {
		t.Errorf("section data does not run from SizeOfHeaders %#x to the end of the file (%#x)", oh.SizeOfHeaders, len(out))
	}
	var addedSize uint32
	for _, w := range want {
		s := f.Section(w.name)
		if sf.Section(w.name) == nil {
			addedSize += s.VirtualSize
		}
		if s.VirtualAddress%sa != 0 || s.Offset%fa != 0 || s.Size%fa != 0 {
			t.Errorf("%s at %#x, data at %#x+%#x: not aligned to %#x in memory, %#x in the file", w.name, s.VirtualAddress, s.Offset, s.Size, sa, fa)
		}
		if s.VirtualSize != uint32(len(w.data)) {
			t.Errorf("%s: VirtualSize %d, want its length %d", w.name, s.VirtualSize, len(w.data))
		}
		data, err := s.Data()
		if err != nil || !bytes.Equal(data[:s.VirtualSize], w.data) || slices.ContainsFunc(data[s.VirtualSize:], func(b byte) bool { return b != 0 }) {
			t.Errorf("%s: data differs (%v)", w.name, err)
		}
		wantFlags := uint32(pe.IMAGE_SCN_MEM_READ | pe.IMAGE_SCN_CNT_INITIALIZED_DATA)
		if w.name == ".linux" {
			wantFlags = pe.IMAGE_SCN_MEM_READ | pe.IMAGE_SCN_CNT_CODE
		}
		if s.Characteristics != wantFlags {
			t.Errorf("%s: characteristics %#x, want %#x", w.name, s.Characteristics, wantFlags)
		}
	}
	last := f.Sections[len(f.Sections)-1]
	if want := (last.VirtualAddress + last.VirtualSize + sa - 1) / sa * sa; oh.SizeOfImage != want {
		t.Errorf("SizeOfImage %#x, want %#x", oh.SizeOfImage, want)
	}
	if oh.CheckSum != 0 {
		t.Errorf("CheckSum %#x, want 0", oh.CheckSum)
	}
	if got, want := oh.SizeOfInitializedData, sf.OptionalHeader.(*pe.OptionalHeader64).SizeOfInitializedData+addedSize; got != want {
		t.Errorf("SizeOfInitializedData %#x, want %#x", got, want)
	}
	if table := 0x40 + 24 + uint32(f.SizeOfOptionalHeader) + 40*uint32(len(f.Sections)); table > oh.SizeOfHeaders {
		t.Errorf("section table ends at %#x, past SizeOfHeaders %#x", table, oh.SizeOfHeaders)
	}
	return f
}

func sortedCopy(s []string) []string { return slices.Sorted(slices.Values(s)) }

func TestAssemble(t *testing.T) {
	stub, s := fakeStub(0x1000), testSections()
	s.SBAT = nil
	orig := slices.Clone(stub)
	out, err := Assemble(stub, s)
	if err != nil {
		t.Fatal(err)
	}
	checkLayout(t, out, stub, added(s))
	if !bytes.Equal(stub, orig) {
		t.Error("Assemble changed the stub")
	}
	// The stub's .sbat is untouched when there is nothing to add.
	if got := sectionData(t, out, ".sbat"); string(got) != stubSBAT {
		t.Errorf(".sbat %q, want the stub's", got)
	}

	// No .cmdline without a command line (an empty one would still
	// override nothing, yet look like one).
	s.Cmdline = nil
	if out, err := Assemble(stub, s); err != nil {
		t.Error(err)
	} else {
		checkLayout(t, out, stub, slices.DeleteFunc(added(s), func(n named) bool { return n.name == ".cmdline" }))
	}
}

func TestReproducible(t *testing.T) {
	s := testSections()
	// Room after the command line: Assemble must not write the NUL there.
	s.Cmdline = append(make([]byte, 0, len(s.Cmdline)+1), s.Cmdline...)
	a, err := Assemble(fakeStub(0x100), s)
	if err != nil {
		t.Fatal(err)
	}
	if s.Cmdline[:len(s.Cmdline)+1][len(s.Cmdline)] != 0 {
		t.Fatal("wrote past the command line")
	}
	s.Cmdline[:len(s.Cmdline)+1][len(s.Cmdline)] = 'x'
	b, err := Assemble(fakeStub(0x100), s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("two assemblies of the same inputs differ")
	}
	if s.Cmdline[:len(s.Cmdline)+1][len(s.Cmdline)] != 'x' {
		t.Error("wrote past the command line")
	}
}

func sectionData(t *testing.T, b []byte, name string) []byte {
	t.Helper()
	f, err := pe.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Section(name)
	if s == nil {
		t.Fatalf("no %s section", name)
	}
	data, _ := s.Data()
	return data[:s.VirtualSize]
}

func TestSBAT(t *testing.T) {
	kernelSBAT := sbatHeader + "\nlinux,1,The Linux Developers,linux,6.1.0,https://kernel.org\n\x00"
	for _, c := range []struct {
		name     string
		room     uint32 // .sbat's room in memory before .sdmagic
		noSBAT   bool   // a stub without .sbat
		extra    string
		kernel   bool // a kernel with an .sbat of its own
		want     string
		moved    bool // .sbat's header after the stub's others
		newOne   bool // an added .sbat section, before .initrd
		wantNone bool
	}{
		{name: "in place", room: 0x1000, extra: slateSBAT,
			want: strings.TrimSuffix(stubSBAT, "\x00") + slateSBAT + "\x00"},
		{name: "sbat line and blank lines dropped", room: 0x1000, extra: sbatHeader + "\n\n" + slateSBAT + "\r\n",
			want: strings.TrimSuffix(stubSBAT, "\x00") + slateSBAT + "\x00"},
		{name: "moved: no room before .sdmagic", room: 0x100, extra: slateSBAT, moved: true,
			want: strings.TrimSuffix(stubSBAT, "\x00") + slateSBAT + "\x00"},
		{name: "moved: no room in the file", room: 0x1000, extra: strings.Repeat(slateSBAT, 12), moved: true,
			want: strings.TrimSuffix(stubSBAT, "\x00") + strings.Repeat(slateSBAT, 12) + "\x00"},
		{name: "the kernel's", room: 0x1000, kernel: true, extra: slateSBAT,
			want: strings.TrimSuffix(stubSBAT, "\x00") + "linux,1,The Linux Developers,linux,6.1.0,https://kernel.org\n" + slateSBAT + "\x00"},
		{name: "stub without .sbat", noSBAT: true, extra: slateSBAT, newOne: true, want: sbatHeader + "\n" + slateSBAT + "\x00"},
		{name: "stub without .sbat, none added", noSBAT: true, wantNone: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			stub := fakeStub(c.room)
			if c.noSBAT {
				stub = fakePE(0x400, fakeSection{".text", 0x1000, []byte{0xcc}}, fakeSection{".sdmagic", 0x2000, []byte("####")})
			}
			s := testSections()
			s.SBAT = []byte(c.extra)
			if c.kernel {
				s.Linux = append(fakePE(0x400, fakeSection{".text", 0x1000, []byte{0xcc}}, fakeSection{".sbat", 0x2000, []byte(kernelSBAT)}),
					s.Linux...)
			}
			out, err := Assemble(stub, s)
			if err != nil {
				t.Fatal(err)
			}
			want := added(s)
			if c.newOne {
				want = slices.Insert(want, 3, named{".sbat", []byte(c.want)})
			}
			if c.moved {
				want = slices.Insert(want, 0, named{".sbat", []byte(c.want)})
			}
			f := checkLayout(t, out, stub, want)
			if c.wantNone {
				if f.Section(".sbat") != nil {
					t.Error("an .sbat section, with nothing to put in it")
				}
				return
			}
			if got := sectionData(t, out, ".sbat"); string(got) != c.want {
				t.Errorf(".sbat\n%q, want\n%q", got, c.want)
			}
			if !c.moved && !c.newOne {
				sf, _ := pe.NewFile(bytes.NewReader(stub))
				if got, old := f.Section(".sbat"), sf.Section(".sbat"); got.VirtualAddress != old.VirtualAddress || got.Offset != old.Offset {
					t.Errorf(".sbat moved from %#x (file %#x) to %#x (file %#x)", old.VirtualAddress, old.Offset, got.VirtualAddress, got.Offset)
				}
			}
			img, err := Read(out)
			if err != nil {
				t.Fatal(err)
			}
			if string(img.SBAT) != strings.TrimSuffix(c.want, "\x00") {
				t.Errorf("Read: SBAT %q", img.SBAT)
			}
		})
	}
}

func TestRead(t *testing.T) {
	s := testSections()
	out, err := Assemble(fakeStub(0x100), s)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Read(out)
	if err != nil {
		t.Fatal(err)
	}
	want := s
	want.SBAT = []byte(strings.TrimSuffix(stubSBAT, "\x00") + slateSBAT)
	if !equal(*img, want) {
		t.Errorf("Read:\n%s\nwant\n%s", show(*img), show(want))
	}
	// A stub (or systemd-boot) has no UKI sections but .sbat.
	img, err = Read(fakeStub(0x100))
	if err != nil {
		t.Fatal(err)
	}
	if img.Linux != nil || img.Cmdline != nil || string(img.SBAT) != strings.TrimSuffix(stubSBAT, "\x00") {
		t.Errorf("Read(stub): %s, %v", show(*img), err)
	}
	// Two of one: which would the stub take?
	two := fakePE(0x400, fakeSection{".cmdline", 0x1000, []byte("a\x00")}, fakeSection{".cmdline", 0x2000, []byte("b\x00")})
	if _, err := Read(two); err == nil || err.Error() != "two .cmdline sections" {
		t.Errorf("two .cmdline sections: %v", err)
	}
	for _, b := range [][]byte{nil, []byte("\x7fELF\x02\x01\x01"), out[:0x100], out[:0x300]} {
		if _, err := Read(b); err == nil {
			t.Errorf("Read(%d bytes): no error", len(b))
		}
	}
}

func equal(a, b Sections) bool {
	return bytes.Equal(a.OSRel, b.OSRel) && bytes.Equal(a.Cmdline, b.Cmdline) && bytes.Equal(a.Uname, b.Uname) &&
		bytes.Equal(a.SBAT, b.SBAT) && bytes.Equal(a.Initrd, b.Initrd) && bytes.Equal(a.Linux, b.Linux)
}

func show(s Sections) string {
	return "osrel " + strconv.Quote(string(s.OSRel)) + " cmdline " + strconv.Quote(string(s.Cmdline)) + " uname " +
		strconv.Quote(string(s.Uname)) + " sbat " + strconv.Quote(string(s.SBAT)) + " initrd " + strconv.Itoa(len(s.Initrd)) +
		" linux " + strconv.Itoa(len(s.Linux))
}

func TestRefused(t *testing.T) {
	stub := fakeStub(0x100)
	patch := func(off int, v any) []byte {
		b := slices.Clone(stub)
		if _, err := binary.Encode(b[off:], binary.LittleEndian, v); err != nil {
			t.Fatal(err)
		}
		return b
	}
	const coff, opt = 0x44, 0x58
	s := testSections()
	for _, c := range []struct {
		name string
		stub []byte
		s    func(*Sections)
		want string
	}{
		{"ELF", []byte("\x7fELF\x02\x01\x01\x00" + strings.Repeat("\x00", 100)), nil, "stub: not a PE image: no MZ header"},
		{"no PE signature", patch(0x3c, uint32(0x100)), nil, "stub: not a PE image: no PE signature at 0x100"},
		{"aarch64", patch(coff, uint16(0xaa64)), nil, "stub: machine 0xaa64 is not x86-64 (0x8664)"},
		{"PE32", patch(opt, uint16(0x10b)), nil, "stub: optional header magic 0x10b: not PE32+ (0x20b)"},
		{"boot service driver", patch(opt+optSubsystem, uint16(11)), nil, "stub: subsystem 11: not an EFI application (10)"},
		{"not executable", patch(coff+18, uint16(0)), nil, "stub: not an executable image"},
		{"signed", patch(opt+optDataDirectory+8*dirSecurity, [2]uint32{0x3000, 0x100}), nil, "stub: it is signed: sign the UKI, not the stub"},
		{"a UKI", fakePE(0x400, fakeSection{".text", 0x1000, []byte{1}}, fakeSection{".linux", 0x2000, []byte{1}}), nil,
			"stub: it already has a .linux section: a UKI, not a systemd-stub"},
		{"no room for headers", fakePE(0x200, fakeSection{".text", 0x1000, []byte{1}}, fakeSection{".data", 0x2000, []byte{1}},
			fakeSection{".rodata", 0x3000, []byte{1}}, fakeSection{".reloc", 0x4000, []byte{1}}), nil,
			"stub: no room for 6 more section headers: its section table ends at 0x1e8 and its first section's data begins at 0x200"},
		{"headers in use", func() []byte { b := slices.Clone(stub); b[0x200] = 1; return b }(), nil,
			"stub: the 200 bytes after its section table (at 0x1c0) are in use"},
		{"truncated", stub[:0x500], nil, "stub: section .text: data at 0x400+0x400 is past the end of the file (0x500 bytes)"},
		{"no kernel", stub, func(s *Sections) { s.Linux = nil }, ".linux: no kernel"},
		{"NUL in the command line", stub, func(s *Sections) { s.Cmdline = []byte("a\x00b") }, ".cmdline: NUL byte at offset 1"},
		{"sbat fields", stub, func(s *Sections) { s.SBAT = []byte("slate,1,slate\n") },
			`.sbat: entry "slate,1,slate": 3 fields, want 6 (component,generation,vendor,package,version,url)`},
		{"sbat generation", stub, func(s *Sections) { s.SBAT = []byte("slate,0,slate,slate,1,https://x\n") },
			`.sbat: entry "slate,0,slate,slate,1,https://x": want a component name and a generation of 1 or more`},
		{"stub sbat", fakePE(0x400, fakeSection{".sbat", 0x1000, []byte("foo,1\n")}), nil, "stub: its .sbat does not begin with an sbat line"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := s
			if c.s != nil {
				c.s(&s)
			}
			out, err := Assemble(c.stub, s)
			if err == nil || err.Error() != c.want {
				t.Errorf("Assemble: %v, want %s", err, c.want)
			}
			if out != nil {
				t.Error("Assemble returned an image with its error")
			}
		})
	}
	// What it assembled is no stub.
	uki, err := Assemble(stub, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Assemble(uki, s); err == nil || !strings.Contains(err.Error(), "already has a .osrel section") {
		t.Errorf("Assemble(a UKI): %v", err)
	}
}

// TestRealStub assembles a UKI of Debian's systemd-stub and checks it as
// binutils, sbsigntool and debug/pe see it: the section
// alignment, VirtualSize of .linux and NUL-terminated .cmdline, and a
// signature that holds until one byte of the command line changes.
func TestRealStub(t *testing.T) {
	stub, err := os.ReadFile(testtool.File(t, testtool.StubPath))
	if err != nil {
		t.Fatal(err)
	}
	testtool.Need(t, "objdump", "objcopy", "sbsign", "sbverify")
	dir := t.TempDir()
	s := testSections()
	s.Initrd, s.Linux = junk(2<<20+5, 3), junk(4<<20+123, 4)
	out, err := Assemble(stub, s)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Assemble(stub, s)
	if !bytes.Equal(out, again) {
		t.Error("two assemblies of the same inputs differ")
	}
	sbat := strings.TrimSuffix(stubSBAT, "\x00") + slateSBAT + "\x00"
	// Its .sbat does not fit before .sdmagic with the slate entry: it moves.
	f := checkLayout(t, out, stub, append([]named{{".sbat", []byte(sbat)}}, added(s)...))
	payload := len(s.OSRel) + len(s.Cmdline) + 1 + len(s.Uname) + len(s.Initrd) + len(s.Linux)
	t.Logf("UKI %d bytes: %d of sections plus %d (stub, .sbat, alignment)", len(out), payload, len(out)-payload)

	p := filepath.Join(dir, "uki.efi")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	// objdump's view: every section there, at the address and of the
	// size that debug/pe reads.
	dump := run(t, "objdump", "-h", p)
	re := regexp.MustCompile(`(?m)^\s*\d+\s+(\S+)\s+([0-9a-f]{8})\s+([0-9a-f]{16})\s+[0-9a-f]{16}\s+([0-9a-f]{8})\s`)
	var seen []string
	sa := uint64(f.OptionalHeader.(*pe.OptionalHeader64).SectionAlignment)
	for _, m := range re.FindAllStringSubmatch(dump, -1) {
		seen = append(seen, m[1])
		size, _ := strconv.ParseUint(m[2], 16, 32)
		vma, _ := strconv.ParseUint(m[3], 16, 64)
		off, _ := strconv.ParseUint(m[4], 16, 32)
		sec := f.Section(m[1])
		if sec == nil || uint64(sec.VirtualSize) != size || uint64(sec.VirtualAddress) != vma || uint64(sec.Offset) != off {
			t.Errorf("objdump: %s size %#x at %#x (file %#x); debug/pe: %+v", m[1], size, vma, off, sec)
		}
		for _, w := range added(s) {
			if w.name == m[1] && (vma%sa != 0 || size != uint64(len(w.data))) {
				t.Errorf("objdump: %s size %#x at %#x, want size %#x at a multiple of %#x", m[1], size, vma, len(w.data), sa)
			}
		}
	}
	if len(seen) != len(f.Sections) || seen[len(seen)-1] != ".linux" {
		t.Errorf("objdump sees %q", seen)
	}
	// objcopy's view of the contents.
	for _, c := range []struct {
		name string
		want []byte
	}{{".cmdline", append(slices.Clone(s.Cmdline), 0)}, {".linux", s.Linux}, {".initrd", s.Initrd}, {".sbat", []byte(sbat)},
		{".sdmagic", []byte("#### LoaderInfo: systemd-stub ")}} {
		o := filepath.Join(dir, c.name)
		run(t, "objcopy", "-O", "binary", "--only-section="+c.name, p, o)
		got, _ := os.ReadFile(o)
		if c.name == ".sdmagic" && !bytes.HasPrefix(got, c.want) || c.name != ".sdmagic" && !bytes.Equal(got, c.want) {
			t.Errorf("objcopy %s: %d bytes %.80q, want %d bytes %.80q", c.name, len(got), got, len(c.want), c.want)
		}
	}

	// sbsign and sbverify: signed with a throwaway key, verified; one
	// byte of the command line changed, refused.
	key, cert := keyPair(t, dir)
	signed := filepath.Join(dir, "uki.signed.efi")
	run(t, "sbsign", "--key", key, "--cert", cert, "--output", signed, p)
	if out := run(t, "sbverify", "--cert", cert, signed); !strings.Contains(out, "Signature verification OK") || strings.Contains(out, "gap") {
		t.Errorf("sbverify:\n%s", out)
	}
	sb, _ := os.ReadFile(signed)
	img, err := Read(sb)
	if err != nil || !bytes.Equal(img.Cmdline, s.Cmdline) || !bytes.Equal(img.Linux, s.Linux) || !bytes.Equal(img.Initrd, s.Initrd) ||
		string(img.SBAT) != strings.TrimSuffix(sbat, "\x00") {
		t.Errorf("Read(signed): %v", err)
	}
	i := bytes.Index(sb, []byte("slate.roothash=0123abcd"))
	sb[i+len("slate.roothash=")] = '1'
	tampered := filepath.Join(dir, "uki.tampered.efi")
	os.WriteFile(tampered, sb, 0o644)
	if out, err := exec.Command("sbverify", "--cert", cert, tampered).CombinedOutput(); err == nil {
		t.Errorf("sbverify accepts a changed root hash:\n%s", out)
	}

	// A signed stub is refused: the UKI is what gets signed.
	signedStub := filepath.Join(dir, "stub.signed.efi")
	run(t, "sbsign", "--key", key, "--cert", cert, "--output", signedStub, testtool.StubPath)
	b, _ := os.ReadFile(signedStub)
	if _, err := Assemble(b, s); err == nil || err.Error() != "stub: it is signed: sign the UKI, not the stub" {
		t.Errorf("Assemble(signed stub): %v", err)
	}
	if elf, err := os.ReadFile(strings.TrimSuffix(testtool.StubPath, ".efi.stub") + ".elf.stub"); err == nil {
		if _, err := Assemble(elf, s); err == nil || err.Error() != "stub: not a PE image: no MZ header" {
			t.Errorf("Assemble(ELF stub): %v", err)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// keyPair writes a throwaway RSA key and self-signed certificate as PEM.
func keyPair(t *testing.T, dir string) (key, cert string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "slate uki test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	key, cert = filepath.Join(dir, "db.key"), filepath.Join(dir, "db.crt")
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600)
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	return key, cert
}
