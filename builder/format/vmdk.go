package format

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// The sparse extent header of a VMDK (VMware's Virtual Disk Format 1.1):
// where its embedded descriptor lies, in sectors.
const (
	vmdkMagic      = "KDMV"
	vmdkDescOffset = 28 // uint64 little-endian
	vmdkDescSize   = 36 // uint64 little-endian
)

var (
	vmdkCID    = regexp.MustCompile(`(?m)^CID=[0-9a-fA-F]{1,8}$`)
	vmdkExtent = regexp.MustCompile(`(?m)^(RW [0-9]+ SPARSE )"[^"\n]*"$`)
)

// ToVMDK writes a streamOptimized VMDK: the disk VMware imports in an OVA
// (and vSphere's datastore upload; AWS VM Import takes it as well), the
// grains deflated, through qemu-img. The VM must boot by EFI (slate has no
// BIOS boot loader). qemu-img writes a random content ID (CID) into the
// descriptor and names the file it wrote, the temporary one, as the extent;
// both are rewritten: the CID from o.Seed, the extent as o.Name, the name the
// file ends up with. Nothing else in the file varies (no timestamp).
func ToVMDK(ctx context.Context, raw, out string, o Options) error {
	if err := qemuImg(ctx, raw, o.Progress, "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, out); err != nil {
		return err
	}
	name := o.Name
	if name == "" {
		name = filepath.Base(out)
	}
	if strings.ContainsAny(name, "\"\n") {
		return fmt.Errorf("%q cannot be named in a VMDK descriptor", name)
	}
	f, err := os.OpenFile(out, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr := make([]byte, 512)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return fmt.Errorf("%s: reading the header qemu-img wrote: %w", out, err)
	}
	if string(hdr[:4]) != vmdkMagic {
		return fmt.Errorf("%s: no VMDK sparse extent header", out)
	}
	off := int64(binary.LittleEndian.Uint64(hdr[vmdkDescOffset:])) * 512
	size := int64(binary.LittleEndian.Uint64(hdr[vmdkDescSize:])) * 512
	if off == 0 || size == 0 || size > 1<<20 {
		return fmt.Errorf("%s: no embedded descriptor (offset %d, %d bytes)", out, off, size)
	}
	area := make([]byte, size)
	if _, err := f.ReadAt(area, off); err != nil {
		return fmt.Errorf("%s: reading the descriptor: %w", out, err)
	}
	desc, _, _ := bytes.Cut(area, []byte{0})
	sum := sha256.Sum256(append(append([]byte{}, o.Seed...), "vmdk CID"...))
	cid := binary.BigEndian.Uint32(sum[:4])
	if cid == 0xffffffff { // "no parent" in parentCID: not a CID to have
		cid--
	}
	if !vmdkCID.Match(desc) || !vmdkExtent.Match(desc) {
		return fmt.Errorf("%s: the descriptor lacks a CID or a sparse extent line:\n%s", out, desc)
	}
	desc = vmdkCID.ReplaceAll(desc, fmt.Appendf(nil, "CID=%08x", cid))
	// Not ReplaceAll: its $1 expansion would read a name with a $ in it.
	desc = vmdkExtent.ReplaceAllFunc(desc, func(line []byte) []byte {
		prefix := vmdkExtent.FindSubmatch(line)[1]
		return []byte(string(prefix) + `"` + name + `"`)
	})
	if len(desc) >= len(area) {
		return fmt.Errorf("%s: the descriptor naming %q does not fit its %d bytes", out, name, len(area))
	}
	clear(area)
	copy(area, desc)
	if _, err := f.WriteAt(area, off); err != nil {
		return fmt.Errorf("%s: %w", out, err)
	}
	return f.Close()
}
