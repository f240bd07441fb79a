package secureboot

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/foxboron/go-uefi/efi/signature"
	"github.com/foxboron/go-uefi/efi/util"
)

// EFIVars is where Linux shows the firmware's variables (efivarfs): a file
// NAME-GUID holding the variable's 4 attribute bytes, then its data.
const EFIVars = "/sys/firmware/efi/efivars"

const (
	secureBootVar = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
	dbVar         = "db-d719b2cb-3d3a-4596-a3bc-dad00e67656f"
)

// Enabled says whether the firmware booted with Secure Boot on, from the
// SecureBoot variable in the efivarfs directory dir ("" for EFIVars). A
// machine without the variable (BIOS, or firmware without Secure Boot) has
// it off.
func Enabled(dir string) (bool, error) {
	data, err := readVar(dir, secureBootVar)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if len(data) != 1 {
		return false, fmt.Errorf("%s: %d bytes of data, want 1", filepath.Join(varDir(dir), secureBootVar), len(data))
	}
	return data[0] == 1, nil
}

// EnrolledDB returns the X.509 certificates of the firmware's db variable in
// the efivarfs directory dir ("" for EFIVars): what a binary's signature
// must chain to for the firmware to run it.
func EnrolledDB(dir string) ([]*x509.Certificate, error) {
	data, err := readVar(dir, dbVar)
	if err != nil {
		return nil, err
	}
	certs, err := ParseSignatureDatabase(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(varDir(dir), dbVar), err)
	}
	return certs, nil
}

func varDir(dir string) string {
	if dir == "" {
		return EFIVars
	}
	return dir
}

// readVar reads a variable's data, without its attributes.
func readVar(dir, name string) ([]byte, error) {
	p := filepath.Join(varDir(dir), name)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("%s: %d bytes, not even the 4 of its attributes", p, len(b))
	}
	return b[4:], nil
}

// ParseSignatureDatabase returns the X.509 certificates (EFI_CERT_X509_GUID
// entries) of an EFI signature database, such as the data of the db
// variable; lists of other types (hashes) are skipped. A certificate Go
// cannot parse is left out: it could only make Verify refuse.
//
// Written here rather than with go-uefi's ReadSignatureDatabase, which fails
// on a whole database for one list of a type it does not implement (such as
// EFI_CERT_X509_SHA256), and trusts the sizes a list states (a short one
// makes it allocate gigabytes or loop).
func ParseSignatureDatabase(data []byte) ([]*x509.Certificate, error) {
	const header = 16 + 4 + 4 + 4 // EFI_SIGNATURE_LIST: type, list, header and signature sizes
	var certs []*x509.Certificate
	for off := 0; off < len(data); {
		rest := data[off:]
		if len(rest) < header {
			return nil, fmt.Errorf("signature list at offset %d: %d bytes, less than its header", off, len(rest))
		}
		var typ util.EFIGUID
		if err := binary.Read(bytes.NewReader(rest[:16]), binary.LittleEndian, &typ); err != nil {
			return nil, err
		}
		listSize := uint64(binary.LittleEndian.Uint32(rest[16:]))
		headerSize := uint64(binary.LittleEndian.Uint32(rest[20:]))
		sigSize := uint64(binary.LittleEndian.Uint32(rest[24:]))
		if listSize < header || listSize > uint64(len(rest)) || header+headerSize > listSize {
			return nil, fmt.Errorf("signature list at offset %d: states %d bytes (header %d), in %d", off, listSize, headerSize, len(rest))
		}
		if util.CmpEFIGUID(typ, signature.CERT_X509_GUID) {
			body := rest[header+headerSize : listSize]
			if sigSize <= 16 || uint64(len(body))%sigSize != 0 {
				return nil, fmt.Errorf("signature list at offset %d: %d bytes of entries of %d", off, len(body), sigSize)
			}
			for e := uint64(0); e < uint64(len(body)); e += sigSize {
				// EFI_SIGNATURE_DATA: the owner's GUID, then the DER.
				if c, err := x509.ParseCertificate(body[e+16 : e+sigSize]); err == nil {
					certs = append(certs, c)
				}
			}
		}
		off += int(listSize)
	}
	return certs, nil
}
