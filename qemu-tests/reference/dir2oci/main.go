// Command dir2oci turns a root filesystem tree into a single-layer OCI image
// layout, byte for byte reproducibly: the same tree and the same epoch give the
// same layout, whatever the inode numbers, readdir order or creation times.
//
// It is the last step of qemu-tests/reference/build.sh (the reference node
// image) and is run with `go run`:
//
//	go run ./qemu-tests/reference/dir2oci -epoch $SOURCE_DATE_EPOCH -o OUT ROOTFS
//
// The layer is one tar, gzip-compressed, written in sorted path order (each
// directory before its children), with numeric uid/gid only, mode bits
// including setuid/setgid/sticky, mtimes clamped to the epoch, hard links
// (found by device and inode) as tar hard links to the first path in that
// order, symlinks, character and block devices and fifos as such, and every
// extended attribute as a PAX SCHILY.xattr record. Sockets are skipped with a
// warning. A mount point inside the tree is an error: a leftover /proc or /dev
// bind mount must never end up in an image.
package main

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
)

// Options control one conversion.
type Options struct {
	// Epoch is SOURCE_DATE_EPOCH: every mtime is clamped to it and it is
	// the image's creation time.
	Epoch int64
	// Ref is the org.opencontainers.image.ref.name annotation of the
	// image in index.json.
	Ref string
	// CreatedBy goes into the image's single history entry.
	CreatedBy string
	// Progress, when not nil, receives a status line now and then.
	Progress io.Writer
	// Warn receives warnings (skipped sockets). Nil means stderr.
	Warn io.Writer
}

// Result describes the written image.
type Result struct {
	Manifest v1.Hash // digest of the image manifest
	Layer    v1.Hash // digest of the compressed layer
	DiffID   v1.Hash // digest of the uncompressed tar
	Size     int64   // compressed layer size
	TarSize  int64   // uncompressed tar size
	Entries  int64   // tar entries written
}

// gzipLevel is fixed: the layer's bytes depend on it. klauspost/compress is
// pinned by go.mod, so its output does not move with the Go toolchain.
const gzipLevel = gzip.DefaultCompression

func main() {
	out := flag.String("o", "", "output OCI layout directory (must not exist or be empty)")
	epoch := flag.Int64("epoch", -1, "clamp mtimes to this Unix time and use it as the creation time (default: $SOURCE_DATE_EPOCH)")
	ref := flag.String("ref", "latest", "value of the org.opencontainers.image.ref.name annotation")
	createdBy := flag.String("created-by", "dir2oci", "created_by of the image's history entry")
	progress := flag.Bool("progress", false, "print progress on stderr")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: dir2oci -o OUT [-epoch N] [-ref NAME] [-progress] ROOTFS\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if *epoch < 0 {
		s := os.Getenv("SOURCE_DATE_EPOCH")
		if s == "" {
			fatalf("no -epoch and no SOURCE_DATE_EPOCH")
		}
		if _, err := fmt.Sscan(s, epoch); err != nil || *epoch < 0 {
			fatalf("bad SOURCE_DATE_EPOCH %q", s)
		}
	}
	opts := Options{Epoch: *epoch, Ref: *ref, CreatedBy: *createdBy}
	if *progress {
		opts.Progress = os.Stderr
	}
	start := time.Now()
	res, err := Convert(flag.Arg(0), *out, opts)
	if err != nil {
		fatalf("%v", err)
	}
	fmt.Printf("manifest %s\nlayer %s\ndiff_id %s\nlayer_size %d\ntar_size %d\nentries %d\nseconds %.1f\n",
		res.Manifest, res.Layer, res.DiffID, res.Size, res.TarSize, res.Entries, time.Since(start).Seconds())
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "dir2oci: "+format+"\n", args...)
	os.Exit(1)
}

// Convert writes the tree at root as a one-layer OCI image layout in out.
func Convert(root, out string, opts Options) (*Result, error) {
	if opts.Ref == "" {
		opts.Ref = "latest"
	}
	if opts.Warn == nil {
		opts.Warn = os.Stderr
	}
	if ents, err := os.ReadDir(out); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("%s is not empty", out)
	}
	lp, err := layout.Write(out, empty.Index)
	if err != nil {
		return nil, err
	}

	// Stream the gzip layer straight into the layout's blob directory and
	// rename it to its digest; AppendImage then finds it there (right size)
	// and does not copy it again.
	blobDir := filepath.Join(out, "blobs", "sha256")
	if err := os.MkdirAll(blobDir, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(blobDir, "layer-*.tmp")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())

	res := &Result{}
	stats := &counters{}
	stop := startProgress(opts.Progress, stats)
	err = writeLayer(root, tmp, opts, res, stats)
	stop()
	if err == nil {
		err = tmp.Chmod(0o644) // CreateTemp made it 0600; the other blobs are 0644
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	blob := filepath.Join(blobDir, res.Layer.Hex)
	if err := os.Rename(tmp.Name(), blob); err != nil {
		return nil, err
	}

	created := v1.Time{Time: time.Unix(opts.Epoch, 0).UTC()}
	cfg := &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      created,
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		},
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     &fileLayer{path: blob, digest: res.Layer, diffID: res.DiffID, size: res.Size},
		MediaType: types.OCILayer,
		History:   v1.History{Created: created, CreatedBy: opts.CreatedBy},
	})
	if err != nil {
		return nil, err
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": opts.Ref,
	})); err != nil {
		return nil, err
	}
	if res.Manifest, err = img.Digest(); err != nil {
		return nil, err
	}
	return res, nil
}

type counters struct {
	entries atomic.Int64
	bytes   atomic.Int64
}

func startProgress(w io.Writer, c *counters) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	line := func() {
		mb := float64(c.bytes.Load()) / 1e6
		fmt.Fprintf(w, "\rdir2oci: %d entries, %.0f MB read, %.0f MB/s   ", c.entries.Load(), mb,
			mb/max(time.Since(start).Seconds(), 0.001))
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				line()
			case <-done:
				line()
				fmt.Fprintln(w)
				return
			}
		}
	}()
	return func() { close(done); <-finished }
}

// countWriter counts and hashes what passes through it.
type countWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

func writeLayer(root string, dst io.Writer, opts Options, res *Result, stats *counters) error {
	gzOut := &countWriter{w: dst, h: sha256.New()}
	gz, err := gzip.NewWriterLevel(gzOut, gzipLevel)
	if err != nil {
		return err
	}
	tarOut := &countWriter{w: gz, h: sha256.New()}
	tw := tar.NewWriter(tarOut)
	if err := writeTree(root, tw, opts, stats); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	res.DiffID = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(tarOut.h.Sum(nil))}
	res.Layer = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(gzOut.h.Sum(nil))}
	res.Size = gzOut.n
	res.TarSize = tarOut.n
	res.Entries = stats.entries.Load()
	return nil
}

type devIno struct{ dev, ino uint64 }

// writeTree writes every entry under root (not root itself) in sorted order:
// each directory's entries sorted by name, a directory right before its
// contents, so extraction never meets a child before its parent.
func writeTree(root string, tw *tar.Writer, opts Options, stats *counters) error {
	var rootSt unix.Stat_t
	if err := unix.Lstat(root, &rootSt); err != nil {
		return &os.PathError{Op: "lstat", Path: root, Err: err}
	}
	if rootSt.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s is not a directory", root)
	}
	links := map[devIno]string{}
	buf := make([]byte, 1<<20)

	var walk func(dir, rel string) error
	walk = func(dir, rel string) error {
		f, err := os.Open(dir)
		if err != nil {
			return err
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return fmt.Errorf("reading %s: %w", dir, err)
		}
		sort.Strings(names)
		for _, name := range names {
			full := filepath.Join(dir, name)
			name := rel + name
			var st unix.Stat_t
			if err := unix.Lstat(full, &st); err != nil {
				return &os.PathError{Op: "lstat", Path: full, Err: err}
			}
			if st.Dev != rootSt.Dev {
				return fmt.Errorf("%s is on another file system (a mount point inside the tree?)", full)
			}
			hdr := &tar.Header{
				Name:    name,
				Mode:    int64(st.Mode & 0o7777),
				Uid:     int(st.Uid),
				Gid:     int(st.Gid),
				ModTime: time.Unix(min(st.Mtim.Sec, opts.Epoch), 0),
				Format:  tar.FormatPAX,
			}
			if err := addXattrs(full, hdr); err != nil {
				return err
			}
			isDir, isReg := false, false
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
				hdr.Typeflag = tar.TypeDir
				hdr.Name += "/"
				isDir = true
			case unix.S_IFREG:
				key := devIno{uint64(st.Dev), st.Ino}
				if first, ok := links[key]; ok && st.Nlink > 1 {
					hdr.Typeflag = tar.TypeLink
					hdr.Linkname = first
				} else {
					if st.Nlink > 1 {
						links[key] = name
					}
					hdr.Typeflag = tar.TypeReg
					hdr.Size = st.Size
					isReg = true
				}
			case unix.S_IFLNK:
				target, err := os.Readlink(full)
				if err != nil {
					return err
				}
				hdr.Typeflag = tar.TypeSymlink
				hdr.Linkname = target
			case unix.S_IFCHR, unix.S_IFBLK:
				hdr.Typeflag = tar.TypeChar
				if st.Mode&unix.S_IFMT == unix.S_IFBLK {
					hdr.Typeflag = tar.TypeBlock
				}
				hdr.Devmajor = int64(unix.Major(uint64(st.Rdev)))
				hdr.Devminor = int64(unix.Minor(uint64(st.Rdev)))
			case unix.S_IFIFO:
				hdr.Typeflag = tar.TypeFifo
			case unix.S_IFSOCK:
				fmt.Fprintf(opts.Warn, "dir2oci: skipping socket %s\n", full)
				continue
			default:
				return fmt.Errorf("%s: unsupported file type %#o", full, st.Mode&unix.S_IFMT)
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return fmt.Errorf("%s: %w", full, err)
			}
			stats.entries.Add(1)
			if isReg {
				if err := copyFile(tw, full, st.Size, buf, stats); err != nil {
					return err
				}
			}
			if isDir {
				if err := walk(full, hdr.Name); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(root, "")
}

func copyFile(tw *tar.Writer, path string, size int64, buf []byte, stats *counters) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.CopyBuffer(tw, io.LimitReader(f, size), buf)
	stats.bytes.Add(n)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if n != size {
		return fmt.Errorf("%s: changed while reading (%d of %d bytes)", path, n, size)
	}
	return nil
}

// addXattrs records every extended attribute of path (not following a
// symlink) as a PAX SCHILY.xattr.NAME record. archive/tar writes PAX records
// sorted by key, so their order is deterministic.
func addXattrs(path string, hdr *tar.Header) error {
	names, err := listXattrs(path)
	if err != nil {
		return err
	}
	for _, name := range names {
		val, err := getXattr(path, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed between list and get
		}
		if err != nil {
			return &os.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+name] = string(val)
	}
	return nil
}

func listXattrs(path string) ([]string, error) {
	for size := 1024; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, &os.PathError{Op: "llistxattr", Path: path, Err: err}
		}
		var names []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				names = append(names, s)
			}
		}
		sort.Strings(names)
		return names, nil
	}
}

func getXattr(path, name string) ([]byte, error) {
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// fileLayer is a gzip layer blob already on disk whose digests were computed
// while it was written.
type fileLayer struct {
	path           string
	digest, diffID v1.Hash
	size           int64
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &readCloser{Reader: zr, close: func() error { zr.Close(); return f.Close() }}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r *readCloser) Close() error { return r.close() }
