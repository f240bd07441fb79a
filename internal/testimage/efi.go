package testimage

import "encoding/binary"

// EFI makes a minimal PE32+ EFI application (FileAlignment 0x200,
// SectionAlignment 0x1000, headers in 0x400 bytes) with the given sections
// (name, data), each at the next 0x1000 in memory from 0x1000: enough for
// uki.Assemble (as a stub), uki.Read and secureboot.Sign.
func EFI(secs ...[2]string) []byte {
	const lfanew, fa, sa, headers = 0x40, 0x200, 0x1000, 0x400
	le := binary.LittleEndian
	b := make([]byte, headers)
	copy(b, "MZ")
	le.PutUint32(b[0x3c:], lfanew)
	copy(b[lfanew:], "PE\x00\x00")
	coff := lfanew + 4
	le.PutUint16(b[coff:], 0x8664) // x86-64
	le.PutUint16(b[coff+2:], uint16(len(secs)))
	le.PutUint16(b[coff+16:], 240)   // SizeOfOptionalHeader
	le.PutUint16(b[coff+18:], 0x206) // executable, no line numbers, debug stripped
	opt := coff + 20
	le.PutUint16(b[opt:], 0x20b) // PE32+
	le.PutUint32(b[opt+16:], sa) // entry point
	le.PutUint32(b[opt+32:], sa) // SectionAlignment
	le.PutUint32(b[opt+36:], fa) // FileAlignment
	le.PutUint32(b[opt+60:], headers)
	le.PutUint16(b[opt+68:], 10)  // EFI application
	le.PutUint32(b[opt+108:], 16) // data directories
	va := uint32(sa)
	for i, s := range secs {
		ptr := uint32(len(b))
		b = append(b, s[1]...)
		for len(b)%fa != 0 {
			b = append(b, 0)
		}
		h := b[opt+240+i*40:]
		copy(h, s[0])
		le.PutUint32(h[8:], uint32(len(s[1])))
		le.PutUint32(h[12:], va)
		le.PutUint32(h[16:], uint32(len(b))-ptr)
		le.PutUint32(h[20:], ptr)
		le.PutUint32(h[36:], 0x40000040) // initialized data, readable
		va += (uint32(len(s[1])) + sa - 1) / sa * sa
	}
	le.PutUint32(b[opt+56:], va) // SizeOfImage
	return b
}

