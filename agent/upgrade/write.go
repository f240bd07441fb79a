package upgrade

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/agent/slots"
	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/boot/verity"
)

// Root write tuning, measured with BenchmarkRootWrite (see writeRoot):
// bufCount buffers of bufSize let the artifact stream (network, sha256) run
// ahead of the device writes; 4 MiB buffers were no faster than 1 MiB ones.
// Flushing in the background, kicked every flushWindow bytes, took the write
// from 0.6 to 0.75-0.85 of a plain copy; the rest is sha256, which the
// artifact stream cannot skip (stream-MB/s in the benchmark is that ceiling).
const (
	bufSize     = 1 << 20
	bufCount    = 4
	flushWindow = 8 << 20
)

// writeRoot copies r to the start of dev through bufCount buffers of size
// bytes each: one goroutine reads (and so hashes: the artifact stream checks
// its digest) while this one writes, so the slower of the two sets the pace.
// A third flushes what was written so far whenever it is idle (and kicked
// every flushWindow bytes), so the disk writes while the stream is still
// hashed; that leaves the last flush only the tail, and keeps the dirty
// pages few on a small node. At the end it flushes dev and drops its cached
// pages, so that the verification reads the disk, not memory.
//
// r must end with io.EOF; any other error, from the stream's digest check
// at its end included, fails the write. It refuses to write more than limit
// bytes.
func writeRoot(ctx context.Context, dev *os.File, r io.Reader, limit int64, size int, progress func(int64)) (int64, error) {
	type chunk struct {
		b   []byte
		err error // io.EOF at the end
	}
	free := make(chan []byte, bufCount)
	full := make(chan chunk, bufCount+1) // never blocks: at most bufCount buffers and one end
	done := make(chan struct{})
	for range bufCount {
		free <- make([]byte, size)
	}
	go func() {
		for {
			var b []byte
			select {
			case b = <-free:
			case <-done:
				return
			}
			n, err := io.ReadFull(r, b)
			if n > 0 {
				full <- chunk{b: b[:n]}
			}
			switch err {
			case nil:
				continue
			case io.EOF, io.ErrUnexpectedEOF:
				err = io.EOF
			}
			full <- chunk{err: err}
			return
		}
	}()

	fd := int(dev.Fd())
	kick := make(chan struct{})
	var flushErr error // the flusher's first error: a write-back error is reported to one fsync only
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		for {
			select {
			case <-kick:
				if err := unix.Fdatasync(fd); err != nil && flushErr == nil {
					flushErr = err
				}
			case <-done:
				return
			}
		}
	}()
	// stop ends both goroutines; after it the flusher no longer uses fd.
	stop := func() error {
		close(done)
		<-flushed
		if flushErr != nil {
			return fmt.Errorf("fdatasync: %w", flushErr)
		}
		return nil
	}

	var written, kicked int64
	for {
		var c chunk
		select {
		case c = <-full:
		case <-ctx.Done():
			stop()
			return written, ctx.Err()
		}
		if c.err == io.EOF {
			break
		}
		if c.err == nil && written+int64(len(c.b)) > limit {
			c.err = fmt.Errorf("the root layer is longer than %d bytes", limit)
		}
		if c.err != nil {
			stop()
			return written, c.err
		}
		n, err := dev.Write(c.b)
		written += int64(n)
		if err != nil {
			stop()
			return written, err
		}
		if written-kicked >= flushWindow {
			select {
			case kick <- struct{}{}:
			default: // a flush is running; the next kick catches up
			}
			kicked = written
		}
		if progress != nil {
			progress(written)
		}
		free <- c.b[:cap(c.b)]
	}
	if err := stop(); err != nil {
		return written, err
	}
	if err := unix.Fdatasync(fd); err != nil {
		return written, fmt.Errorf("fdatasync: %w", err)
	}
	// Clean pages only now: after fdatasync DONTNEED can drop them all.
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		return written, fmt.Errorf("fadvise: %w", err)
	}
	return written, nil
}

// squashfs superblock: magic, and the filesystem's length at byte 40.
const (
	squashfsMagic     = "hsqs"
	squashfsBytesUsed = 40
)

// verifyRoot reads the slot back as the init does: a squashfs whose end,
// rounded up to 4 KiB, is where the verity superblock is, that superblock
// agreeing with the artifact's config, and every block under the root hash.
func verifyRoot(device string, r artifact.RootInfo) error {
	f, err := os.Open(device)
	if err != nil {
		return err
	}
	defer f.Close()
	// Drop cached pages once more: another opener may have read some.
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)

	head := make([]byte, squashfsBytesUsed+8)
	if _, err := f.ReadAt(head, 0); err != nil {
		return fmt.Errorf("reading %s: %w", device, err)
	}
	if string(head[:4]) != squashfsMagic {
		return fmt.Errorf("%s does not start with a squashfs (it starts with %q); the init could not mount it", device, head[:4])
	}
	used := int64(binary.LittleEndian.Uint64(head[squashfsBytesUsed:]))
	if end := (used + verity.BlockSize - 1) / verity.BlockSize * verity.BlockSize; used <= 0 || end != r.DataSize {
		return fmt.Errorf("%s: the squashfs says it is %d bytes, so the init would look for the hash tree at byte %d, but it is at %d",
			device, used, end, r.DataSize)
	}
	sb, err := verity.ReadSuperblock(f, r.DataSize)
	if err != nil {
		return err
	}
	if want := uint64(r.DataSize / verity.BlockSize); sb.DataBlocks != want {
		return fmt.Errorf("verity superblock: %d data blocks, the artifact's config says %d", sb.DataBlocks, want)
	}
	if salt := strings.TrimPrefix(sb.SaltHex(), "-"); salt != r.Salt {
		return fmt.Errorf("verity superblock: salt %q, the artifact's config says %q", salt, r.Salt)
	}
	root, err := hex.DecodeString(r.RootHash)
	if err != nil {
		return err
	}
	return verity.Verify(f, r.DataSize, root)
}

// writeLayer streams l to rel on the ESP; WriteFile keeps nothing of a
// stream that fails its digest check at the end.
func writeLayer(e *slots.ESP, rel string, l v1.Layer) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = e.WriteFile(rel, rc)
	return err
}
