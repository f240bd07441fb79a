package format

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// vhdDynamic is what Detect calls a VHD that is not fixed (dynamic or
// differencing: its footer's copy opens the file). Open reads it through
// qemu-img; the builder never writes one.
const vhdDynamic = "vhd (dynamic)"

// Detect says which format the file at path is in, by its magic bytes (never
// by its name): one of Names, or "vhd (dynamic)". A file that is none of
// them is Raw; whether it holds a disk is for its reader to find out.
func Detect(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd) // a block device's Stat size is 0
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	head := make([]byte, 512)
	n, err := io.ReadFull(io.NewSectionReader(f, 0, size), head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte("QFI\xfb")):
		return QCOW2, nil
	case bytes.HasPrefix(head, []byte(vmdkMagic)), bytes.HasPrefix(head, []byte("# Disk DescriptorFile")):
		return VMDK, nil
	case bytes.HasPrefix(head, []byte(vhdCookie)):
		return vhdDynamic, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return RawZstd, nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return RawXz, nil
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return GCE, nil
	}
	if size >= 2*vhdFooterSize && size%512 == 0 {
		footer := make([]byte, 8)
		if _, err := f.ReadAt(footer, size-vhdFooterSize); err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		if string(footer) == vhdCookie {
			return VHD, nil
		}
	}
	return Raw, nil
}

// Disk is a disk image's raw bytes, where a reader can find them.
type Disk struct {
	// Format is what the file was (Detect).
	Format string
	// Path is a raw disk: the file itself (raw, a fixed VHD) or a
	// temporary file Close removes.
	Path string
	// Size is the raw disk's size: the first Size bytes of Path. (A fixed
	// VHD's file is 512 bytes longer.)
	Size int64
	temp string
}

// Close removes the temporary raw disk, if Open made one.
func (d *Disk) Close() error {
	if d.temp == "" {
		return nil
	}
	err := os.Remove(d.temp)
	d.temp = ""
	return err
}

// Open finds the raw disk in the image file at path, whatever its format
// (Detect): a raw file and a fixed VHD (after its footer is checked) are read
// where they are; the compressed formats and a GCE archive are decompressed,
// and qcow2, VMDK and a dynamic VHD converted by qemu-img, into a sparse
// temporary file in os.TempDir.
func Open(ctx context.Context, path string) (*Disk, error) {
	f, err := Detect(path)
	if err != nil {
		return nil, err
	}
	d := &Disk{Format: f, Path: path}
	switch f {
	case Raw, VHD:
		r, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		if d.Size, err = r.Seek(0, io.SeekEnd); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if f == Raw {
			return d, nil
		}
		d.Size -= vhdFooterSize
		footer := make([]byte, vhdFooterSize)
		if _, err := r.ReadAt(footer, d.Size); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if err := checkVHDFooter(footer, d.Size); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return d, nil
	}
	tmp, err := os.CreateTemp("", "slate-disk-*.raw")
	if err != nil {
		return nil, err
	}
	d.Path, d.temp = tmp.Name(), tmp.Name()
	err = unpack(ctx, f, path, tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		var st os.FileInfo
		if st, err = os.Stat(d.Path); err == nil {
			d.Size = st.Size()
		}
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("%s (%s): %w", path, f, err)
	}
	return d, nil
}

// unpack writes the raw disk of the image at path, in format f, to tmp.
func unpack(ctx context.Context, f, path string, tmp *os.File) error {
	switch f {
	case QCOW2, VMDK, vhdDynamic:
		qf := map[string]string{QCOW2: "qcow2", VMDK: "vmdk", vhdDynamic: "vpc"}[f]
		return qemuImg(ctx, path, nil, "convert", "-f", qf, "-O", "raw", path, tmp.Name())
	}
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
	var r io.Reader
	switch f {
	case RawZstd:
		zr, err := zstd.NewReader(in)
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	case RawXz:
		if _, err := exec.LookPath("xz"); err == nil {
			// Several times faster than the Go reader; either will do.
			cmd := exec.CommandContext(ctx, "xz", "--decompress", "--stdout", "--threads=0")
			cmd.Stdin = in
			out, err := cmd.StdoutPipe()
			if err != nil {
				return err
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				return err
			}
			err = copySparse(tmp, &reader{ctx: ctx, r: out})
			if werr := cmd.Wait(); werr != nil {
				return fmt.Errorf("xz: %v: %s", werr, bytes.TrimSpace(stderr.Bytes()))
			}
			return err
		}
		xr, err := xz.NewReader(in)
		if err != nil {
			return err
		}
		r = xr
	case GCE:
		gz, err := gzip.NewReader(in)
		if err != nil {
			return err
		}
		tr := tar.NewReader(gz)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				return fmt.Errorf("no %s in the archive: not a GCE image", GCEDiskName)
			}
			if err != nil {
				return fmt.Errorf("not a GCE image (%s in a gzip'd tar): %w", GCEDiskName, err)
			}
			// tar -S writes a sparse entry, which tar.Reader expands.
			if h.Name == GCEDiskName && (h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeGNUSparse) {
				r = tr
				break
			}
		}
	default:
		return errors.New("no reader for this format")
	}
	return copySparse(tmp, &reader{ctx: ctx, r: r})
}
