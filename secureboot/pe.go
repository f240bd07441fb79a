package secureboot

import (
	"bytes"
	"debug/pe"
	"encoding/binary"
	"errors"
	"fmt"
)

// winCertTypePKCSSignedData is the WIN_CERTIFICATE type of an Authenticode
// signature.
const winCertTypePKCSSignedData = 0x0002

// winCert is a WIN_CERTIFICATE of a PE's attribute certificate table.
type winCert struct {
	certType uint16
	data     []byte
}

// certificateTable reads a PE's attribute certificate table. It checks what
// go-uefi's authenticode.Parse and Signatures take on trust (the table's
// place and every entry's length: a short one makes it allocate 4 GiB), and
// that the table is the file's end, as its Authenticode hash assumes.
func certificateTable(b []byte) ([]winCert, error) {
	f, err := pe.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("not a PE/COFF binary: %w", err)
	}
	var dirs uint32
	var dd pe.DataDirectory
	switch h := f.OptionalHeader.(type) {
	case *pe.OptionalHeader64:
		dirs, dd = h.NumberOfRvaAndSizes, h.DataDirectory[pe.IMAGE_DIRECTORY_ENTRY_SECURITY]
	case *pe.OptionalHeader32:
		dirs, dd = h.NumberOfRvaAndSizes, h.DataDirectory[pe.IMAGE_DIRECTORY_ENTRY_SECURITY]
	default:
		return nil, errors.New("not a PE/COFF image: it has no optional header")
	}
	if dirs <= pe.IMAGE_DIRECTORY_ENTRY_SECURITY {
		return nil, fmt.Errorf("its optional header has %d data directories, none for certificates", dirs)
	}
	if dd.Size == 0 {
		return nil, nil
	}
	start, end := uint64(dd.VirtualAddress), uint64(dd.VirtualAddress)+uint64(dd.Size)
	if end != uint64(len(b)) {
		return nil, fmt.Errorf("its certificate table (%d bytes at offset %d) does not end the file (%d bytes)", dd.Size, start, len(b))
	}
	var certs []winCert
	for p := start; p < end; {
		if end-p < 8 {
			if bytes.Count(b[p:end], []byte{0}) == int(end-p) {
				break // padding
			}
			return nil, fmt.Errorf("its certificate table has %d stray bytes at its end", end-p)
		}
		n := uint64(binary.LittleEndian.Uint32(b[p:]))
		if n < 8 || n > end-p {
			return nil, fmt.Errorf("its certificate table has an entry of %d bytes at offset %d, in %d bytes", n, p, end-p)
		}
		certs = append(certs, winCert{certType: binary.LittleEndian.Uint16(b[p+6:]), data: b[p+8 : p+n]})
		p += (n + 7) &^ 7
	}
	return certs, nil
}
