package secureboot

// SBAT revocation without shim. SBAT (the .sbat section's component
// generations) is enforced by shim, which slate's boot chain (firmware →
// systemd-boot → UKI) does not have. So slate keeps a node's revocation
// level itself, in an EFI variable the firmware guards: SlateSBATLevel is
// a time-based authenticated variable, and after its first write the
// firmware accepts a new value only signed by the same certificate and
// with a later timestamp. The builder signs "slate,N" with the db key (the
// timestamp is derived from N, so a lower generation can never replace a
// higher one, and the same inputs give the same bytes); an image carries
// that payload and its agent writes it once the image has booted well; the
// init of every signed UKI refuses to go on when its generation is below
// the node's level. Nobody on the node can lower the level, root included.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/foxboron/go-uefi/efi/signature"
	"github.com/foxboron/go-uefi/efi/util"
	"github.com/foxboron/go-uefi/pkcs7"
	"golang.org/x/sys/unix"
)

const (
	// SBATLevelName and SlateGUID name the variable (SlateGUID is the
	// vendor GUID of the init's variables too, initramfs/init/efivar).
	SBATLevelName = "SlateSBATLevel"
	SlateGUID     = "b3297508-91e8-4c73-a7e1-81d6f47d4769"
	// sbatLevelAttrs: non-volatile, boot service and runtime access,
	// time-based authenticated write access.
	sbatLevelAttrs uint32 = 0x01 | 0x02 | 0x04 | 0x20
)

// sbatEpoch is the timestamp of generation 0; generation N is N seconds later.
var sbatEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// SBATLevelPayload is what raises a node's level to gen: an
// EFI_VARIABLE_AUTHENTICATION_2 header signed by s, then the data
// "slate,<gen>\n". Written as is (after the attributes) to efivarfs.
func SBATLevelPayload(gen int, s *Signer) ([]byte, error) {
	if gen < 1 {
		return nil, fmt.Errorf("SBAT generation %d: want 1 or more", gen)
	}
	data := []byte(fmt.Sprintf("slate,%d\n", gen))
	t := sbatEpoch.Add(time.Duration(gen) * time.Second)
	ts := util.EFITime{Year: uint16(t.Year()), Month: uint8(t.Month()), Day: uint8(t.Day()),
		Hour: uint8(t.Hour()), Minute: uint8(t.Minute()), Second: uint8(t.Second())}

	// What the firmware checks the signature over: name (UTF-16, no NUL),
	// vendor GUID, attributes, timestamp, data.
	var signed bytes.Buffer
	for _, u := range utf16.Encode([]rune(SBATLevelName)) {
		binary.Write(&signed, binary.LittleEndian, u)
	}
	guid := util.StringToGUID(SlateGUID)
	binary.Write(&signed, binary.LittleEndian, *guid)
	binary.Write(&signed, binary.LittleEndian, sbatLevelAttrs)
	binary.Write(&signed, binary.LittleEndian, ts)
	signed.Write(data)

	// No signed attributes (no signing time), as for Authenticode here:
	// the same key and generation give the same bytes.
	der, err := pkcs7.SignPKCS7(s.Key, s.Cert, pkcs7.OIDData, signed.Bytes(), pkcs7.NoAttr())
	if err != nil {
		return nil, fmt.Errorf("signing SBAT level %d: %w", gen, err)
	}
	auth := signature.NewEFIVariableAuthentication2()
	auth.Time = ts
	// The variable carries the SignedData itself, not its ContentInfo.
	sd, err := unwrapContentInfo(der)
	if err != nil {
		return nil, err
	}
	auth.AuthInfo.Header.Length += uint32(len(sd))
	auth.AuthInfo.CertData = sd
	var out bytes.Buffer
	auth.Marshal(&out)
	out.Write(data)
	return out.Bytes(), nil
}

// unwrapContentInfo returns the content of a PKCS#7 ContentInfo (a
// SEQUENCE of the type OID and an explicit [0] content).
func unwrapContentInfo(der []byte) ([]byte, error) {
	seq, rest, ok := derElem(der, 0x30)
	if !ok || len(rest) != 0 {
		return nil, errors.New("PKCS#7: not a ContentInfo")
	}
	_, afterOID, ok := derElem(seq, 0x06)
	if !ok {
		return nil, errors.New("PKCS#7: ContentInfo without a type")
	}
	content, _, ok := derElem(afterOID, 0xa0)
	if !ok {
		return nil, errors.New("PKCS#7: ContentInfo without content")
	}
	return content, nil
}

// derElem reads one DER element of tag from b: its contents and what follows.
func derElem(b []byte, tag byte) (contents, rest []byte, ok bool) {
	if len(b) < 2 || b[0] != tag {
		return nil, nil, false
	}
	n, hdr := int(b[1]), 2
	if n&0x80 != 0 {
		k := n & 0x7f
		if k == 0 || k > 4 || len(b) < 2+k {
			return nil, nil, false
		}
		n = 0
		for _, c := range b[2 : 2+k] {
			n = n<<8 | int(c)
		}
		hdr = 2 + k
	}
	if n < 0 || len(b) < hdr+n {
		return nil, nil, false
	}
	return b[hdr : hdr+n], b[hdr+n:], true
}

// ParseSBATLevel reads the payload's or the variable's data, "slate,N".
func ParseSBATLevel(data []byte) (int, error) {
	v, ok := strings.CutPrefix(strings.TrimSpace(string(data)), "slate,")
	if n, err := strconv.Atoi(v); ok && err == nil && n >= 1 {
		return n, nil
	}
	return 0, fmt.Errorf("%q is not slate,<generation>", data)
}

// PayloadGeneration is the generation a payload from SBATLevelPayload sets.
func PayloadGeneration(payload []byte) (int, error) {
	// EFI_TIME (16), then WIN_CERTIFICATE_UEFI_GUID whose dwLength counts itself.
	if len(payload) < 16+4 {
		return 0, errors.New("SBAT level payload: too short")
	}
	n := int(binary.LittleEndian.Uint32(payload[16:]))
	if n < 24 || 16+n > len(payload) {
		return 0, errors.New("SBAT level payload: bad certificate length")
	}
	return ParseSBATLevel(payload[16+n:])
}

// SBATLevel is the node's level from the efivarfs directory dir ("" for
// EFIVars): 0 when the variable is not set.
func SBATLevel(dir string) (int, error) {
	data, err := readVar(dir, SBATLevelName+"-"+SlateGUID)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return ParseSBATLevel(data)
}

// WriteSBATLevel writes a payload from SBATLevelPayload to the variable in
// the efivarfs directory dir ("" for EFIVars). The firmware refuses it
// (EPERM or EINVAL from efivarfs) unless it is signed by the key that set
// the level first and raises it.
func WriteSBATLevel(dir string, payload []byte) error {
	p := filepath.Join(varDir(dir), SBATLevelName+"-"+SlateGUID)
	// efivarfs makes a variable's file immutable; an authenticated write
	// needs it writable (the firmware is what guards it).
	if f, err := os.Open(p); err == nil {
		if flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS); err == nil && flags&fsImmutableFL != 0 {
			unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags&^fsImmutableFL))
		}
		f.Close()
	}
	buf := make([]byte, 4, 4+len(payload))
	binary.LittleEndian.PutUint32(buf, sbatLevelAttrs)
	buf = append(buf, payload...)
	// One write(2): efivarfs passes the attributes and data to SetVariable.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return fmt.Errorf("%s: the firmware refused the SBAT level: %w", p, err)
	}
	return f.Close()
}

// fsImmutableFL is FS_IMMUTABLE_FL (chattr +i), linux/fs.h.
const fsImmutableFL = 0x10
