package flatten

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// layerSrc is one layer of the root, bottom-up position pos.
type layerSrc struct {
	pos   int
	layer v1.Layer
	// upper: one of Options.Upper, made by this process: read uncompressed,
	// with no descriptor to check it against.
	upper bool
	// byDiffID: a layer of a docker-save archive, read uncompressed and
	// checked against its diff_id only.
	byDiffID bool
	// desc is the manifest's descriptor and diffID the config's
	// rootfs.diff_ids entry: what the bytes must hash to.
	desc   v1.Descriptor
	diffID v1.Hash
	label  string
	// cached is a verified copy of the compressed blob in the work
	// directory, kept for a second reading (see Options.WorkDir).
	cached string
}

// budget bounds the uncompressed bytes read.
type budget struct {
	limit, used int64
	over        func(b *budget, what string) error
}

func (b *budget) add(n int64) error {
	b.used += n
	if b.used > b.limit {
		return b.over(b, "")
	}
	return nil
}

// declare counts an entry's declared size before any byte of it is read.
func (b *budget) declare(size int64) error {
	if size > b.limit-b.used {
		return b.over(b, fmt.Sprintf("with this entry's %d bytes", size))
	}
	return nil
}

// counter hashes and counts what is read through it. Its first error
// sticks, so that a decompressor or the tar reader wrapping it cannot turn
// it into something vaguer.
type counter struct {
	r      io.Reader
	h      hash.Hash
	n, max int64 // max < 0: unbounded
	tee    io.Writer
	budget *budget
	err    error
	tooBig func(n int64) error
}

func (c *counter) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	if n > 0 {
		c.h.Write(p[:n])
		c.n += int64(n)
		switch {
		case c.max >= 0 && c.n > c.max:
			c.err = c.tooBig(c.n)
		case c.tee != nil:
			if _, werr := c.tee.Write(p[:n]); werr != nil {
				c.err = fmt.Errorf("caching the blob: %w", werr)
			}
		}
		if c.err == nil && c.budget != nil {
			c.err = c.budget.add(int64(n))
		}
		if c.err != nil {
			return n, c.err
		}
	}
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// stream reads one layer's tar, checking it as it goes.
type stream struct {
	src       *layerSrc
	rc        io.ReadCloser // the blob (or the upper layer's tar)
	comp      *counter      // the compressed bytes (nil for an upper layer)
	buf       *bufio.Reader
	dec       io.Closer // the decompressor, if any
	unc       *counter  // the uncompressed bytes: the tar
	tr        *tar.Reader
	cache     *os.File
	cacheName string
	last      string // the entry being read, for errors
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// open starts reading a layer: the verified copy in the work directory if
// there is one; else the blob, copied into the work directory as it is read
// when cache says so and the blob is no local file (a layout's blob can be
// read again).
func (f *flattener) open(src *layerSrc, b *budget, cache bool) (*stream, error) {
	s := &stream{src: src}
	if src.upper || src.byDiffID {
		rc, err := src.layer.Uncompressed()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src.label, err)
		}
		s.rc = rc
		s.unc = &counter{r: bufio.NewReaderSize(rc, 256<<10), h: sha256.New(), max: -1, budget: b}
		s.tr = tar.NewReader(s.unc)
		return s, nil
	}
	var err error
	if src.cached != "" {
		s.rc, err = os.Open(src.cached)
	} else {
		s.rc, err = src.layer.Compressed()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src.label, err)
	}
	var tee io.Writer
	if _, local := s.rc.(*os.File); cache && !local {
		if s.cache, s.cacheName, err = f.cacheFile(src); err != nil {
			s.close()
			return nil, err
		}
		tee = s.cache
	}
	size := src.desc.Size
	s.comp = &counter{r: io.LimitReader(s.rc, size+1), h: sha256.New(), max: size, tee: tee, tooBig: func(n int64) error {
		return fmt.Errorf("the blob has more than the %d bytes its descriptor gives", size)
	}}
	s.buf = bufio.NewReaderSize(s.comp, int(min(size+1, 1<<20)))
	// The compression is told by the content: whatever the media type
	// says, the uncompressed bytes must hash to the config's diff_id.
	magic, err := s.buf.Peek(4)
	if err != nil && err != io.EOF {
		s.close()
		return nil, s.fail(err)
	}
	var tarBytes io.Reader = s.buf
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		z, err := gzip.NewReader(s.buf)
		if err != nil {
			s.close()
			return nil, s.fail(fmt.Errorf("gzip: %w", err))
		}
		s.dec, tarBytes = z, z
	case bytes.HasPrefix(magic, zstdMagic):
		z, err := zstd.NewReader(s.buf)
		if err != nil {
			s.close()
			return nil, s.fail(fmt.Errorf("zstd: %w", err))
		}
		s.dec, tarBytes = z.IOReadCloser(), z
	}
	s.unc = &counter{r: tarBytes, h: sha256.New(), max: -1, budget: b}
	s.tr = tar.NewReader(s.unc)
	return s, nil
}

func (f *flattener) cacheFile(src *layerSrc) (*os.File, string, error) {
	dir, err := f.workDir()
	if err != nil {
		return nil, "", err
	}
	name := filepath.Join(dir, "flatten-layer-"+strconv.Itoa(src.pos)+".blob")
	fh, err := os.Create(name)
	if err != nil {
		return nil, "", fmt.Errorf("%s: caching the blob: %w", src.label, err)
	}
	f.files = append(f.files, name)
	return fh, name, nil
}

// next is the next entry; io.EOF at the archive's end.
func (s *stream) next() (*tar.Header, error) {
	h, err := s.tr.Next()
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, s.fail(err)
	}
	if n, err := normalize(h.Name); err == nil {
		s.last = "/" + n
	} else {
		s.last = strconv.Quote(h.Name)
	}
	return h, nil
}

// entryErr names the layer in an error that names the entry.
func (s *stream) entryErr(err error) error {
	return &flatErr{fmt.Errorf("%s: %w", s.src.label, err)}
}

// fail names the layer and, where known, the entry; a counter's error (a
// size or digest problem, the bound) wins over what it caused downstream.
func (s *stream) fail(err error) error {
	switch {
	case s.comp != nil && s.comp.err != nil:
		err = s.comp.err
	case s.unc != nil && s.unc.err != nil:
		err = s.unc.err
	}
	var flat *flatErr
	if errors.As(err, &flat) {
		return err
	}
	where := s.src.label
	if s.last != "" {
		where += ": at " + s.last
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = fmt.Errorf("the layer ends early: %w", err)
	}
	return &flatErr{fmt.Errorf("%s: %w", where, err)}
}

// flatErr is an error already worded for the user.
type flatErr struct{ error }

func (e *flatErr) Unwrap() error { return e.error }

// copyData copies the current entry's data.
func (s *stream) copyData(w io.Writer) error {
	if _, err := io.Copy(w, s.tr); err != nil {
		return s.fail(err)
	}
	return nil
}

// finish reads the layer to its end and checks it: the compressed bytes'
// size and digest against the manifest's descriptor, the uncompressed
// bytes' digest against the config's diff_id. What follows the tar's end
// (padding) counts. Only a layer that passes is cached.
func (s *stream) finish() error {
	s.last = ""
	if _, err := io.Copy(io.Discard, s.unc); err != nil {
		return s.fail(err)
	}
	if s.src.byDiffID {
		return s.checkDiffID()
	}
	if s.comp == nil {
		return nil // an upper layer: nothing to check it against
	}
	if _, err := io.Copy(io.Discard, s.buf); err != nil {
		return s.fail(err)
	}
	return s.check(true)
}

// check compares what was read with the descriptors; withDiffID when the
// whole tar was read.
func (s *stream) check(withDiffID bool) error {
	src := s.src
	if s.comp.n != src.desc.Size {
		return &flatErr{fmt.Errorf("%s: %d bytes, its descriptor gives %d", src.label, s.comp.n, src.desc.Size)}
	}
	got := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", s.comp.h.Sum(nil))}
	if got != src.desc.Digest {
		return &flatErr{fmt.Errorf("%s: the bytes read hash to %s: not the layer the manifest names", src.label, got)}
	}
	if withDiffID {
		if err := s.checkDiffID(); err != nil {
			return err
		}
	}
	if s.cache != nil {
		err := s.cache.Close()
		s.cache = nil
		if err != nil {
			return fmt.Errorf("%s: caching the blob: %w", src.label, err)
		}
		src.cached = s.cacheName
	}
	return nil
}

func (s *stream) checkDiffID() error {
	unc := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", s.unc.h.Sum(nil))}
	if unc != s.src.diffID {
		return &flatErr{fmt.Errorf("%s: its uncompressed bytes hash to %s, the config's diff_id is %s", s.src.label, unc, s.src.diffID)}
	}
	return nil
}

// spool reads the rest of the compressed blob into the cache and checks it
// (no diff_id: the tar was not read to its end), so a second reading need
// not fetch it again.
func (s *stream) spool() error {
	if s.cache == nil {
		return nil
	}
	if _, err := io.Copy(io.Discard, s.buf); err != nil {
		return s.fail(err)
	}
	return s.check(false)
}

func (s *stream) close() {
	if s.dec != nil {
		s.dec.Close()
	}
	if s.rc != nil {
		s.rc.Close()
	}
	if s.cache != nil {
		s.cache.Close()
	}
}
