package initramfs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
	"github.com/ulikunitz/xz"

	"github.com/slate-os/slate/initramfs/layout"
)

// Contents is what an initramfs Build wrote says about itself (slate inspect).
type Contents struct {
	Compression   string `json:"compression"`
	Size          int64  `json:"size"`
	KernelRelease string `json:"kernelRelease"`
	// Modules are the module names of the load list, in load order.
	Modules []string `json:"modules"`
}

// maxCPIO bounds the decompressed archive Read accepts.
const maxCPIO = 1 << 30

// Read reads an initramfs written by Build, in any of its compressions,
// and returns its load list.
func Read(r io.Reader) (*Contents, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	c := &Contents{Size: int64(len(data))}
	var dec io.Reader
	switch {
	case bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		c.Compression = Zstd
		zr, err := zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		dec = zr
	case bytes.HasPrefix(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		c.Compression = XZ
		if dec, err = xz.NewReader(bytes.NewReader(data)); err != nil {
			return nil, err
		}
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		c.Compression = Gzip
		if dec, err = gzip.NewReader(bytes.NewReader(data)); err != nil {
			return nil, err
		}
	case bytes.HasPrefix(data, []byte("070701")):
		c.Compression = None
		dec = bytes.NewReader(data)
	default:
		return nil, errors.New("not an initramfs: neither a newc cpio nor zstd, xz or gzip")
	}
	raw, err := io.ReadAll(io.LimitReader(dec, maxCPIO))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Compression, err)
	}
	cr := cpio.Newc.Reader(bytes.NewReader(raw))
	for {
		rec, err := cr.ReadRecord()
		if err == io.EOF {
			return nil, fmt.Errorf("no %s in the initramfs", layout.LoadList)
		}
		if err != nil {
			return nil, fmt.Errorf("cpio: %w", err)
		}
		if rec.Name != strings.TrimPrefix(layout.LoadList, "/") {
			continue
		}
		list, kver, err := layout.ParseLoadList(io.NewSectionReader(rec.ReaderAt, 0, int64(rec.FileSize)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", layout.LoadList, err)
		}
		c.KernelRelease = kver
		c.Modules = []string{}
		for _, e := range list {
			c.Modules = append(c.Modules, e.Name())
		}
		return c, nil
	}
}
