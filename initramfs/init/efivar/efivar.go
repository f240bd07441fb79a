// Package efivar reads and writes UEFI variables through efivarfs, the
// kernel's filesystem for them (mounted on /sys/firmware/efi/efivars; the
// init mounts it itself, see package run).
//
// A variable NAME of vendor GUID is the file NAME-GUID; its content is the
// variable's 4 attribute bytes (little-endian) followed by its data, and a
// write of both in one write(2) replaces the variable. efivarfs makes most
// variables' files immutable (so that rm -rf cannot delete what the
// firmware needs to boot): Set and Delete clear the flag (FS_IOC_SETFLAGS)
// first.
//
// The directory is a field, so tests use a temporary one.
package efivar

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"unicode/utf16"

	"golang.org/x/sys/unix"
)

// Dir is where efivarfs is mounted.
const Dir = "/sys/firmware/efi/efivars"

// Vendor GUIDs.
const (
	// LoaderGUID is systemd-boot's (LoaderBootCountPath, LoaderEntrySelected, ...).
	LoaderGUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
	// SlateGUID is slate's own, for the variables the init keeps
	// (SlateInitFailure). It was made up once, at random, for slate.
	SlateGUID = "b3297508-91e8-4c73-a7e1-81d6f47d4769"
)

// Attributes (UEFI spec, GetVariable).
const (
	NonVolatile       uint32 = 0x1
	BootserviceAccess uint32 = 0x2
	RuntimeAccess     uint32 = 0x4
	// TimeBasedAuthenticated marks a variable the firmware lets change
	// only by a payload signed with the key that first set it.
	TimeBasedAuthenticated uint32 = 0x20
	// Default is a variable that survives a power cut and that the OS can
	// read and write.
	Default = NonVolatile | BootserviceAccess | RuntimeAccess
)

// Store is an efivarfs directory.
type Store struct{ Dir string }

// System is the running machine's variables.
var System = Store{Dir: Dir}

// Path is the file of variable name of vendor guid.
func (s Store) Path(name, guid string) string { return filepath.Join(s.Dir, name+"-"+guid) }

// Get reads a variable; the error wraps fs.ErrNotExist when it is not set.
func (s Store) Get(name, guid string) (attrs uint32, data []byte, err error) {
	b, err := os.ReadFile(s.Path(name, guid))
	if err != nil {
		return 0, nil, err
	}
	if len(b) < 4 {
		return 0, nil, fmt.Errorf("EFI variable %s-%s: %d bytes, shorter than its attributes", name, guid, len(b))
	}
	return binary.LittleEndian.Uint32(b), b[4:], nil
}

// Set creates or replaces a variable.
func (s Store) Set(name, guid string, attrs uint32, data []byte) error {
	p := s.Path(name, guid)
	clearImmutable(p)
	buf := make([]byte, 4+len(data))
	binary.LittleEndian.PutUint32(buf, attrs)
	copy(buf[4:], data)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(buf) // efivarfs takes a variable in one write
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing EFI variable %s-%s: %w", name, guid, err)
	}
	return nil
}

// Delete removes a variable; one that is not set is not an error.
func (s Store) Delete(name, guid string) error {
	p := s.Path(name, guid)
	clearImmutable(p)
	err := os.Remove(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// String reads a variable that holds a NUL-terminated UTF-16LE string, as
// systemd-boot's do; "" when it is not set.
func (s Store) String(name, guid string) (string, error) {
	_, b, err := s.Get(name, guid)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return DecodeUTF16(b), nil
}

// DecodeUTF16 decodes a NUL-terminated (or unterminated) UTF-16LE string.
func DecodeUTF16(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// EncodeUTF16 is a NUL-terminated UTF-16LE string, as systemd-boot writes it.
func EncodeUTF16(s string) []byte {
	u := append(utf16.Encode([]rune(s)), 0)
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

// fsImmutableFL is FS_IMMUTABLE_FL (chattr +i), linux/fs.h.
const fsImmutableFL = 0x10

// clearImmutable clears a file's immutable flag, best effort: a variable
// that is not set, or a directory on a filesystem without the flag (a
// test's), has nothing to clear, and a write that still fails says so.
func clearImmutable(p string) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer f.Close()
	fd := int(f.Fd())
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil || flags&fsImmutableFL == 0 {
		return
	}
	unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags&^fsImmutableFL))
}
