// Package state is what the init knows about the state partition (mounted
// on /var): how to tell an unformatted partition from a filesystem and from
// damage, the copy of the image's /var onto a new filesystem (and whether
// it fits), growing the filesystem online, and the machine ID kept there.
package state

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/internal/fsync"
)

// Kind is what the start of the state partition holds.
type Kind int

const (
	// Damaged: neither the builder's marker nor a filesystem. Never format it.
	Damaged Kind = iota
	// Unformatted: the builder's boot.StateUnformatted marker; first boot.
	Unformatted
	// Ext4: an ext2/3/4 superblock.
	Ext4
)

func (k Kind) String() string {
	switch k {
	case Unformatted:
		return "unformatted"
	case Ext4:
		return "ext4"
	}
	return "damaged"
}

// ext4 superblock: at byte 1024, magic 0xEF53 at offset 0x38.
const (
	sbOffset    = 1024
	magicOffset = sbOffset + 0x38
	ext4Magic   = 0xEF53
)

// Detect reads the start of the partition. A filesystem wins over the
// marker: mke2fs does not clear sector 0 on x86, so a partition formatted by
// a boot that died before wiping the marker holds both, and it holds data.
func Detect(r io.ReaderAt) (Kind, error) {
	b := make([]byte, 4096)
	n, err := r.ReadAt(b, 0)
	if err != nil && !(errors.Is(err, io.EOF) && n > magicOffset+2) {
		return Damaged, fmt.Errorf("reading the start of the partition: %w", err)
	}
	if binary.LittleEndian.Uint16(b[magicOffset:]) == ext4Magic {
		return Ext4, nil
	}
	if bytes.HasPrefix(b, []byte(boot.StateUnformatted)) {
		return Unformatted, nil
	}
	return Damaged, nil
}

// Describe says in words what a damaged partition's start looks like, for
// the fatal error message.
func Describe(r io.ReaderAt) string {
	b := make([]byte, 4096)
	n, _ := r.ReadAt(b, 0)
	b = b[:n]
	if len(bytes.Trim(b, "\x00")) == 0 {
		return "its first 4 KiB are zeros: neither the unformatted marker nor an ext4 superblock"
	}
	return "neither the unformatted marker nor an ext4 superblock at its start"
}

// ClearMarker zeroes the marker at the start of a partition that now holds
// an ext4 filesystem (whose first 1024 bytes are unused padding), so nothing
// ever reads the marker again. It refuses if there is no ext4 superblock.
func ClearMarker(rw interface {
	io.ReaderAt
	io.WriterAt
}) error {
	k, err := Detect(rw)
	if err != nil {
		return err
	}
	if k != Ext4 {
		return fmt.Errorf("not clearing the marker: the partition holds no ext4 superblock")
	}
	head := make([]byte, len(boot.StateUnformatted))
	if _, err := rw.ReadAt(head, 0); err != nil {
		return err
	}
	if string(head) != boot.StateUnformatted {
		return nil
	}
	_, err = rw.WriteAt(make([]byte, len(head)), 0)
	return err
}

// Paths on the state filesystem, relative to its root (/var).
const (
	// MachineIDFile holds the node's machine ID: 32 lower-case hex digits
	// and a newline, like /etc/machine-id, which the init fills from it at
	// every boot.
	MachineIDFile = "lib/slate/machine-id"
	// PopulatedFile exists once the image's /var was copied onto the
	// filesystem; while it is missing, each boot copies what is missing.
	PopulatedFile = "lib/slate/populated"
)

// ValidMachineID is true for 32 lower-case hex digits, not all zero.
func ValidMachineID(s string) bool {
	if len(s) != 32 || s == strings.Repeat("0", 32) {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// NewMachineID makes a random ID, formatted as systemd does: a version 4
// UUID's 128 bits in 32 lower-case hex digits.
func NewMachineID(rnd io.Reader) (string, error) {
	var b [16]byte
	if _, err := io.ReadFull(rnd, b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b[:]), nil
}

// MachineID returns the machine ID kept under varRoot, creating it on first
// use (or replacing an unreadable one, with a warning in replaced).
func MachineID(varRoot string) (id string, created bool, replaced string, err error) {
	p := filepath.Join(varRoot, MachineIDFile)
	b, err := os.ReadFile(p)
	switch {
	case err == nil:
		if s := strings.TrimSpace(string(b)); ValidMachineID(s) {
			return s, false, "", nil
		}
		replaced = fmt.Sprintf("%s held %q, not a machine ID: made a new one", "/var/"+MachineIDFile, truncate(string(b), 40))
	case !errors.Is(err, os.ErrNotExist):
		return "", false, "", err
	}
	id, err = NewMachineID(rand.Reader)
	if err != nil {
		return "", false, "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", false, "", err
	}
	if err := fsync.WriteFile(p, []byte(id+"\n"), 0o444); err != nil {
		return "", false, "", err
	}
	return id, true, replaced, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// MarkPopulated records that the image's /var was copied, with the image
// version that provided it.
func MarkPopulated(varRoot, version string) error {
	p := filepath.Join(varRoot, PopulatedFile)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return fsync.WriteFile(p, []byte("image-version="+version+"\n"), 0o644)
}

// Populated reports whether MarkPopulated ran on this filesystem.
func Populated(varRoot string) bool {
	_, err := os.Lstat(filepath.Join(varRoot, PopulatedFile))
	return err == nil
}
