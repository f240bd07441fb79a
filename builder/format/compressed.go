package format

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// GCEDiskName is the one file in a GCE image archive.
const GCEDiskName = "disk.raw"

// ToGCE writes what Compute Engine imports (gcloud compute images create
// --source-uri gs://BUCKET/NAME.tar.gz): the raw disk as disk.raw, the only
// name GCE looks for, in a gzip'd tar in GNU format (what GCE's
// documentation makes with tar --format=oldgnu -Sczf; Go's FormatGNU is the
// same header layout; sparse entries are allowed, not required, and not
// written). The image needs the UEFI_COMPATIBLE guest OS feature, since
// slate boots by UEFI. Reproducible: the entry's mtime is o.ModTime, owner
// 0:0, and the gzip header has neither a name nor a time.
func ToGCE(ctx context.Context, raw, out string, o Options) error {
	in, err := os.Open(raw)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	return writeCompressed(out, func(w io.Writer) (io.WriteCloser, error) {
		// gzip -6, what tar -z uses. The slot's root is compressed already
		// and most of the rest is zeros: on the reference disk (2370 MiB,
		// 139 MB gzip'd) level 6 took 1.0 s, level 1 0.9 s for 0.3% more.
		gz, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
		if err != nil {
			return nil, err
		}
		// MTIME 0 is "no time"; this gzip writes a zero ModTime's
		// Unix() cut to 32 bits (a day in 2042) unless told.
		gz.ModTime = time.Unix(0, 0)
		return &tarGz{tw: tar.NewWriter(gz), gz: gz}, nil
	}, func(w io.Writer) error {
		tw := w.(*tarGz).tw
		err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: GCEDiskName, Size: fi.Size(), Mode: 0o644,
			ModTime: o.ModTime.Truncate(time.Second), Format: tar.FormatGNU,
		})
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, &reader{ctx: ctx, r: in, progress: o.Progress})
		return err
	})
}

// tarGz closes the tar then the gzip stream.
type tarGz struct {
	tw *tar.Writer
	gz *gzip.Writer
}

func (t *tarGz) Write(p []byte) (int, error) { return t.tw.Write(p) }
func (t *tarGz) Close() error {
	if err := t.tw.Close(); err != nil {
		return err
	}
	return t.gz.Close()
}

// ToZstd writes the raw disk zstd-compressed (klauspost/compress at its
// default level, about zstd -3, on every core; the frames are the same
// whatever the number of cores): for platforms and tools that take a
// compressed raw image (OpenStack and bare-metal provisioners stream it,
// zstd -d restores it).
func ToZstd(ctx context.Context, raw, out string, o Options) error {
	in, err := os.Open(raw)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeCompressed(out, func(w io.Writer) (io.WriteCloser, error) {
		return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedDefault))
	}, func(w io.Writer) error {
		_, err := io.Copy(w, &reader{ctx: ctx, r: in, progress: o.Progress})
		return err
	})
}

// writeCompressed writes out through a compressor: open wraps the file,
// body writes the content into what open returned.
func writeCompressed(out string, open func(io.Writer) (io.WriteCloser, error), body func(io.Writer) error) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	w, err := open(bw)
	if err != nil {
		return err
	}
	if err := body(w); err != nil {
		w.Close()
		return fmt.Errorf("writing %s: %w", out, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return f.Close()
}

// ToXz writes the raw disk xz-compressed (-6, xz's default), through the xz
// tool, multi-threaded. Measured on 2 cores with a 2300 MiB disk holding
// 101 MiB of (compressed) data: 42 s, against 222 s for
// github.com/ulikunitz/xz, which has one thread, for the same size to
// 0.01%. (-1 took 16 s for a file 0.07% larger: the data is compressed
// already.) Reproducible for one xz version: from xz 5.4 on, -T0 is the
// multi-threaded compressor even on one core, and its blocks (3 × the
// dictionary size) do not depend on the number of threads; xz 5.2 on one
// core compresses single-threaded, to other bytes.
func ToXz(ctx context.Context, raw, out string, o Options) error {
	in, err := os.Open(raw)
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, "xz", "--compress", "--stdout", "--threads=0", "-6")
	cmd.Stdin = &reader{ctx: ctx, r: in, progress: o.Progress}
	cmd.Stdout = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return errors.New("the xz tool is not installed (Debian: apt-get install xz-utils)")
		}
		return fmt.Errorf("xz: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return f.Close()
}
