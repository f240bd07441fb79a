// Package uki assembles a Unified Kernel Image (systemd-stub with the
// kernel, initramfs and command line as PE sections, which one Secure Boot
// signature covers) and reads one back. It does what systemd's ukify does
// (src/ukify/ukify.py, pe_add_sections), in Go because ukify is not
// packaged for Debian bookworm, and with the standard library only because
// both the builder and the agent use it.
package uki

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Sections are the parts of a UKI that systemd-stub reads.
type Sections struct {
	OSRel []byte // .osrel: the image's os-release, for the boot menu
	// Cmdline is the kernel command line (.cmdline). Assemble adds the
	// terminating NUL and Read removes it. Under Secure Boot systemd-stub
	// ignores the boot entry's options when there is one; an empty Cmdline
	// leaves the section out, and then the entry's options count.
	Cmdline []byte
	Uname   []byte // .uname: the kernel release (uname -r)
	// SBAT: for Assemble, entries (component,generation,vendor,package,
	// version,url lines) added to the stub's .sbat so that a generation
	// can be revoked; for Read, the whole .sbat text.
	SBAT   []byte
	Initrd []byte // .initrd: the initramfs
	Linux  []byte // .linux: the kernel (bzImage)
}

// sbatHeader is the first line of every .sbat: the version of the format.
const sbatHeader = "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md"

// maxSize keeps every offset and address within a PE's 32 bits, with room
// for alignment.
const maxSize = math.MaxUint32 - 1<<24

// Assemble makes a UKI of a systemd-stub (linuxx64.efi.stub) and s, laid
// out as ukify does: the stub's sections as they are (less the COFF
// symbol table some carry), then .osrel, .cmdline, .uname, .initrd and
// .linux, each at the next SectionAlignment boundary in memory and
// FileAlignment boundary in the file, .linux last so that nothing follows
// the kernel in memory. Each VirtualSize is the content's length. The
// stub's .sbat is kept, with s.SBAT's entries (and any the kernel's own
// .sbat has) merged in as ukify does. The result is unsigned and depends
// only on its inputs.
func Assemble(stub []byte, s Sections) ([]byte, error) {
	if len(s.Linux) == 0 {
		return nil, errors.New(".linux: no kernel")
	}
	if i := bytes.IndexByte(s.Cmdline, 0); i >= 0 {
		return nil, fmt.Errorf(".cmdline: NUL byte at offset %d", i)
	}
	extra, err := sbatEntries(s.SBAT)
	if err != nil {
		return nil, fmt.Errorf(".sbat: %w", err)
	}
	if n := len(stub) + len(s.OSRel) + len(s.Cmdline) + len(s.Uname) + len(s.SBAT) + len(s.Initrd) + len(s.Linux); n > maxSize {
		return nil, fmt.Errorf("%d bytes: too large for a PE image", n)
	}
	p, err := parse(stub)
	if err != nil {
		return nil, fmt.Errorf("stub: %w", err)
	}
	if err := checkStub(p, stub); err != nil {
		return nil, fmt.Errorf("stub: %w", err)
	}
	a := &assembly{p: p}
	a.fa = uint64(le.Uint32(stub[p.opt+optFileAlignment:]))
	a.sa = uint64(le.Uint32(stub[p.opt+optSectionAlignment:]))
	nStub := len(p.sections)
	tableEnd := uint64(p.table) + uint64(nStub)*sectionHeaderSize
	room := min(alignUp(uint64(le.Uint32(stub[p.opt+optSizeOfHeaders:])), a.fa), p.firstRaw(len(stub)))
	a.out = stripSymbols(p, stub, len(stub)+len(s.Initrd)+len(s.Linux)+8*int(a.fa)+8192)

	type part struct {
		name string
		data []byte
	}
	parts := []part{{".osrel", s.OSRel}, {".uname", s.Uname}, {".initrd", s.Initrd}, {".linux", s.Linux}}
	if len(s.Cmdline) > 0 {
		parts = slices.Insert(parts, 1, part{".cmdline", append(slices.Clip(s.Cmdline), 0)})
	}

	// The kernel's own SBAT entries count too, as with ukify: revoking
	// either the stub or the kernel's generation refuses the UKI.
	var kernelSBAT []string
	if k, err := parse(s.Linux); err == nil {
		if i := k.find(".sbat"); i >= 0 {
			if e, headed := splitSBAT(k.sections[i].data(s.Linux)); headed {
				kernelSBAT = e
			}
		}
	}
	if add := append(kernelSBAT, extra...); len(add) > 0 {
		if i := p.find(".sbat"); i >= 0 {
			stubSBAT, headed := splitSBAT(p.sections[i].data(stub))
			if !headed {
				return nil, fmt.Errorf("stub: its .sbat does not begin with an sbat line")
			}
			if err := a.replaceSBAT(i, joinSBAT(append(stubSBAT, add...))); err != nil {
				return nil, fmt.Errorf("stub: %w", err)
			}
		} else {
			parts = slices.Insert(parts, len(parts)-2, part{".sbat", joinSBAT(add)})
		}
	}

	for _, pt := range parts {
		if len(pt.data) > 0 {
			a.add(pt.name, pt.data)
		}
	}

	newEnd := uint64(p.table) + uint64(len(p.sections))*sectionHeaderSize
	if newEnd > room {
		return nil, fmt.Errorf("stub: no room for %d more section headers: its section table ends at %#x and its first section's data begins at %#x",
			len(p.sections)-nStub, tableEnd, room)
	}
	if slices.ContainsFunc(a.out[tableEnd:newEnd], func(b byte) bool { return b != 0 }) {
		return nil, fmt.Errorf("stub: the %d bytes after its section table (at %#x) are in use", newEnd-tableEnd, tableEnd)
	}
	for i, sec := range p.sections {
		copy(a.out[p.table+i*sectionHeaderSize:], sec.encode())
	}
	le.PutUint16(a.out[p.coff+2:], uint16(len(p.sections)))
	if soh := uint64(le.Uint32(a.out[p.opt+optSizeOfHeaders:])); newEnd > soh {
		le.PutUint32(a.out[p.opt+optSizeOfHeaders:], uint32(min(alignUp(newEnd, a.fa), room)))
	}
	le.PutUint32(a.out[p.opt+optSizeOfImage:], uint32(alignUp(p.imageEnd(), a.sa)))
	// As ukify: the sum of the added sections' sizes, .linux included.
	sz := uint64(le.Uint32(a.out[p.opt+optSizeOfInitializedData:])) + a.initData
	le.PutUint32(a.out[p.opt+optSizeOfInitializedData:], uint32(min(sz, math.MaxUint32)))
	// The stub's checksum no longer holds; EFI does not check it, and
	// ukify writes 0 too (sbsign leaves it out of the signed hash).
	le.PutUint32(a.out[p.opt+optCheckSum:], 0)
	return a.out, nil
}

// checkStub refuses what cannot become a bootable, signable UKI.
func checkStub(p *peFile, b []byte) error {
	if m := le.Uint16(b[p.coff:]); m != machineAMD64 {
		return fmt.Errorf("machine %#x is not x86-64 (%#x)", m, machineAMD64)
	}
	if p.magic != magicPE32Plus {
		return fmt.Errorf("optional header magic %#x: not PE32+ (%#x)", p.magic, magicPE32Plus)
	}
	if p.table-p.opt < optDataDirectory+8*(dirSecurity+1) {
		return fmt.Errorf("optional header of %d bytes has no certificate table entry: the UKI could not be signed", p.table-p.opt)
	}
	if ss := le.Uint16(b[p.opt+optSubsystem:]); ss != subsystemEFIApp {
		return fmt.Errorf("subsystem %d: not an EFI application (%d)", ss, subsystemEFIApp)
	}
	if le.Uint16(b[p.coff+18:])&fileExecutable == 0 {
		return errors.New("not an executable image")
	}
	if n := le.Uint32(b[p.opt+optNumberOfRvaAndSizes:]); n <= dirSecurity || p.opt+optDataDirectory+8*int(n) > p.table {
		return fmt.Errorf("%d data directories: the UKI could not be signed", n)
	}
	if le.Uint32(b[p.opt+optDataDirectory+8*dirSecurity+4:]) != 0 {
		return errors.New("it is signed: sign the UKI, not the stub")
	}
	for _, f := range []int{optFileAlignment, optSectionAlignment} {
		if a := le.Uint32(b[p.opt+f:]); a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("alignment %#x at optional header offset %d is not a power of two", a, f)
		}
	}
	for _, s := range p.sections {
		switch s.name {
		case ".osrel", ".cmdline", ".uname", ".initrd", ".linux":
			return fmt.Errorf("it already has a %s section: a UKI, not a systemd-stub", s.name)
		}
	}
	return nil
}

// assembly is a UKI being laid out: the stub's headers as they will be
// written, and the file, section data appended.
type assembly struct {
	p        *peFile
	out      []byte
	fa, sa   uint64 // FileAlignment, SectionAlignment
	initData uint64 // added to SizeOfInitializedData
}

// appendRaw puts data at the next FileAlignment boundary of the file,
// padded to the next one.
func (a *assembly) appendRaw(data []byte) (ptr, size uint32) {
	a.out = pad(a.out, a.fa)
	ptr = uint32(len(a.out))
	a.out = pad(append(a.out, data...), a.fa)
	return ptr, uint32(len(a.out)) - ptr
}

// add appends a section after every other, in memory and in the file.
func (a *assembly) add(name string, data []byte) {
	s := &section{name: name, virtualSize: uint32(len(data)), virtualAddress: uint32(alignUp(a.p.imageEnd(), a.sa))}
	// As ukify: .linux is code, since the EFI handover protocol of older
	// kernels runs it where it is loaded.
	flags := uint32(scnMemRead | scnCntInitializedData)
	if name == ".linux" {
		flags = scnMemRead | scnCntCode
	}
	le.PutUint32(s.hdr[36:], flags)
	s.pointerToRaw, s.sizeOfRawData = a.appendRaw(data)
	a.p.sections = append(a.p.sections, s)
	a.initData += uint64(len(data))
}

// replaceSBAT puts the merged text in the stub's .sbat section i. ukify
// swaps it in place, checking only the room in the file; but in memory
// the next section may begin sooner (Debian's systemd 252 stub has 256
// bytes of .sbat before .sdmagic, and uses 226). A text that does not fit
// moves .sbat after the stub's other sections, in memory and in the file,
// so that the file keeps its data in section order without gaps (sbsign
// warns of gaps, and Authenticode hashes what lies after them oddly).
func (a *assembly) replaceSBAT(i int, text []byte) error {
	p, s := a.p, a.p.sections[i]
	limit := uint64(math.MaxUint32)
	for _, o := range p.sections {
		if o != s && o.virtualAddress > s.virtualAddress {
			limit = min(limit, uint64(o.virtualAddress))
		}
	}
	if uint64(s.virtualAddress)+uint64(len(text)) <= limit && len(text) <= int(s.sizeOfRawData) {
		old := a.out[s.pointerToRaw : s.pointerToRaw+s.sizeOfRawData]
		clear(old)
		copy(old, text)
		s.virtualSize = uint32(len(text))
		return nil
	}
	cannot := func(why string, args ...any) error {
		return fmt.Errorf("cannot move .sbat to make room for its %d bytes: %s", len(text), fmt.Sprintf(why, args...))
	}
	for d := range int(le.Uint32(a.out[p.opt+optNumberOfRvaAndSizes:])) {
		rva, size := le.Uint32(a.out[p.opt+optDataDirectory+8*d:]), le.Uint32(a.out[p.opt+optDataDirectory+8*d+4:])
		if size > 0 && (d == dirDebug || uint64(rva) < s.end() && uint64(rva)+uint64(size) > uint64(s.virtualAddress)) {
			return cannot("data directory %d points into it or at file offsets", d)
		}
	}
	if uint64(len(a.out)) != p.rawEnd() {
		return cannot("data follows the sections in the file")
	}
	if uint64(s.pointerToRaw)%a.fa != 0 || uint64(s.sizeOfRawData)%a.fa != 0 {
		return cannot("its data at %#x+%#x is not aligned to %#x", s.pointerToRaw, s.sizeOfRawData, a.fa)
	}
	a.out = append(a.out[:s.pointerToRaw], a.out[s.pointerToRaw+s.sizeOfRawData:]...)
	for _, o := range p.sections {
		if o != s && o.pointerToRaw > s.pointerToRaw {
			o.pointerToRaw -= s.sizeOfRawData
		}
	}
	// Section headers stay in address order: .sbat's goes last.
	p.sections = slices.Delete(p.sections, i, i+1)
	s.virtualAddress = uint32(alignUp(p.imageEnd(), a.sa))
	s.virtualSize = uint32(len(text))
	s.pointerToRaw, s.sizeOfRawData = a.appendRaw(text)
	p.sections = append(p.sections, s)
	return nil
}

// stripSymbols copies the stub without the COFF symbol table that old
// stubs carry at their end (Debian's 252 does: 13 KiB), as ukify does: an
// image needs none. It leaves one that is anywhere else.
func stripSymbols(p *peFile, stub []byte, capacity int) []byte {
	out := append(make([]byte, 0, capacity), stub...)
	ptr, n := uint64(le.Uint32(stub[p.coff+8:])), uint64(le.Uint32(stub[p.coff+12:]))
	if ptr == 0 {
		return out
	}
	end := ptr + symbolSize*n
	if end+4 <= uint64(len(stub)) {
		end += uint64(le.Uint32(stub[end:])) // the string table, its size first
	}
	if end != uint64(len(stub)) || ptr < p.rawEnd() {
		return out
	}
	for _, s := range p.sections {
		if strings.HasPrefix(s.name, "/") { // a long name, in the string table
			return out
		}
	}
	out = out[:ptr]
	le.PutUint32(out[p.coff+8:], 0)
	le.PutUint32(out[p.coff+12:], 0)
	le.PutUint16(out[p.coff+18:], le.Uint16(out[p.coff+18:])|fileLocalSymsStripped)
	return out
}

// pad appends zeros up to the next multiple of align.
func pad(b []byte, align uint64) []byte {
	return append(b, make([]byte, alignUp(uint64(len(b)), align)-uint64(len(b)))...)
}

// splitSBAT splits an .sbat text into entries, leaving out the sbat line
// that heads it (headed says whether it did).
func splitSBAT(text []byte) (entries []string, headed bool) {
	for l := range strings.SplitSeq(string(bytes.TrimRight(text, "\x00")), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			entries = append(entries, l)
		}
	}
	if len(entries) > 0 && strings.HasPrefix(entries[0], "sbat,") {
		return entries[1:], true
	}
	return entries, false
}

// sbatEntries checks the entries to add: six fields each, the generation
// a positive number, as shim parses them.
func sbatEntries(text []byte) ([]string, error) {
	entries, _ := splitSBAT(text)
	for _, e := range entries {
		f := strings.Split(e, ",")
		if len(f) != 6 {
			return nil, fmt.Errorf("entry %q: %d fields, want 6 (component,generation,vendor,package,version,url)", e, len(f))
		}
		if g, err := strconv.Atoi(f[1]); err != nil || g < 1 || f[0] == "" {
			return nil, fmt.Errorf("entry %q: want a component name and a generation of 1 or more", e)
		}
	}
	return entries, nil
}

// joinSBAT makes an .sbat text as ukify does: the sbat line, the entries,
// a NUL.
func joinSBAT(entries []string) []byte {
	return []byte(sbatHeader + "\n" + strings.Join(entries, "\n") + "\n\x00")
}

// Read finds the UKI sections of a PE image (signed or not) as
// systemd-stub sees them: each trimmed to its VirtualSize (unless its data
// in the file is shorter), .cmdline and .sbat without their trailing NULs. A section that is missing is nil (a
// systemd-stub or systemd-boot has no .linux). The slices share pe's
// memory.
func Read(pe []byte) (*Sections, error) {
	p, err := parse(pe)
	if err != nil {
		return nil, err
	}
	s := &Sections{}
	fields := map[string]*[]byte{".osrel": &s.OSRel, ".cmdline": &s.Cmdline, ".uname": &s.Uname,
		".sbat": &s.SBAT, ".initrd": &s.Initrd, ".linux": &s.Linux}
	seen := map[string]bool{}
	for _, sec := range p.sections {
		f := fields[sec.name]
		if f == nil {
			continue
		}
		if seen[sec.name] {
			return nil, fmt.Errorf("two %s sections", sec.name)
		}
		seen[sec.name] = true
		*f = sec.data(pe)
	}
	s.Cmdline = bytes.TrimRight(s.Cmdline, "\x00")
	s.SBAT = bytes.TrimRight(s.SBAT, "\x00")
	return s, nil
}
