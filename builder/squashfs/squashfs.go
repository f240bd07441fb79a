// Package squashfs writes a squashfs from a tar stream with tar2sqfs
// (squashfs-tools-ng): the one runner the root (builder/rootfs) and system
// extensions (sysext/build) share, so both get the same options, the same
// attribute rules and the same errors.
//
// tar2sqfs rather than a Go writer: go-diskfs's squashfs writer was
// measured to corrupt real root trees (large directories, xattrs, setuid
// bits), and tar2sqfs is rootless, streaming and reproducible: the same
// stream and options give the same bytes, whatever the number of jobs.
package squashfs

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options tune the squashfs.
type Options struct {
	// Compression is a tar2sqfs compressor name (zstd, xz, gzip, lz4, lzo,
	// lzma); empty is zstd.
	Compression string
	// Level is the compressor's level; 0 leaves tar2sqfs's default.
	Level int
	// ModTime stamps directories the stream does not list (e.g. the root).
	ModTime time.Time
	// Progress, if set, is called with the bytes of tar stream written so
	// far, every 8 MiB.
	Progress func(n int64)
	// Tee, if set, also receives the tar stream, byte for byte (a hash of
	// the content, say).
	Tee io.Writer
}

// ErrNotFound is the error when tar2sqfs is not installed.
var ErrNotFound = errors.New("tar2sqfs not found: install squashfs-tools-ng (make deps)")

// Write runs tar2sqfs to write the squashfs out (created or truncated) and
// calls fill with a tar writer feeding its standard input; Write closes the
// tar writer after fill returns. It returns the size of the tar stream.
//
// When fill fails on its own, tar2sqfs is killed and fill's error is
// returned as it is (the caller names what it was reading); when fill
// failed to write to tar2sqfs (it exited), tar2sqfs's error is returned:
// it says why.
func Write(ctx context.Context, out string, opt Options, fill func(tw *tar.Writer) error) (int64, error) {
	comp := opt.Compression
	if comp == "" {
		comp = "zstd"
	}
	args := []string{
		"--quiet", "--force", "--no-skip",
		"--compressor", comp,
		"--num-jobs", strconv.Itoa(runtime.NumCPU()),
		"--defaults", fmt.Sprintf("mtime=%d", max(opt.ModTime.Unix(), 0)),
	}
	if opt.Level != 0 {
		args = append(args, "--comp-extra", fmt.Sprintf("level=%d", opt.Level))
	}
	args = append(args, out)
	cmd := exec.CommandContext(ctx, "tar2sqfs", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return 0, ErrNotFound
		}
		return 0, err
	}
	bw := bufio.NewWriterSize(stdin, 1<<20)
	var w io.Writer = bw
	if opt.Tee != nil {
		w = io.MultiWriter(bw, opt.Tee)
	}
	cw := &counter{w: w, progress: opt.Progress}
	tw := tar.NewWriter(cw)
	fillErr := fill(tw)
	if fillErr == nil {
		if fillErr = tw.Close(); fillErr == nil {
			fillErr = bw.Flush()
		}
		if fillErr != nil {
			fillErr = fmt.Errorf("writing to tar2sqfs: %w", fillErr)
		}
	}
	if fillErr != nil && !errors.Is(fillErr, syscall.EPIPE) {
		// fill failed on its own: tar2sqfs must not finish a squashfs, nor
		// complain of a stream cut short instead of fill's reason.
		cmd.Process.Kill()
		stdin.Close()
		cmd.Wait()
		return 0, fillErr
	}
	stdin.Close()
	if waitErr := cmd.Wait(); waitErr != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = waitErr.Error()
		}
		return 0, fmt.Errorf("tar2sqfs: %s", msg)
	}
	if fillErr != nil {
		return 0, fillErr
	}
	return cw.n, nil
}

type counter struct {
	w        io.Writer
	n        int64
	progress func(int64)
	last     int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if c.progress != nil && c.n-c.last >= 8<<20 {
		c.last = c.n
		c.progress(c.n)
	}
	return n, err
}

// KeepXattr says whether squashfs can store an attribute: the kernel's
// squashfs knows only the user, trusted and security namespaces, and
// tar2sqfs refuses the rest (POSIX ACLs are system.*).
func KeepXattr(name string) bool {
	for _, ns := range []string{"user.", "trusted.", "security."} {
		if strings.HasPrefix(name, ns) {
			return true
		}
	}
	return false
}

// DropXattrs removes from h the extended attributes squashfs cannot hold
// (see KeepXattr) and returns how many it removed: tar2sqfs would fail on
// them rather than skip them.
func DropXattrs(h *tar.Header) int {
	n := 0
	for k := range h.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && !KeepXattr(name) {
			delete(h.PAXRecords, k)
			n++
		}
	}
	for k := range h.Xattrs { //nolint:staticcheck // the reader fills both
		if !KeepXattr(k) {
			delete(h.Xattrs, k) //nolint:staticcheck
		}
	}
	return n
}
