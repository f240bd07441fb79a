package store

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// layerFile is one entry of the rendered store.
type layerFile struct {
	name string // path in the root, no leading slash
	dir  bool
	body []byte // small files
	file string // blob files, copied as they are
	size int64
}

// Layer renders the store as an uncompressed tar layer that puts it at
// ImageDir in a root (the builder stacks it above its node files): the
// layout's oci-layout, index.json and every blob index.json reaches, with
// their parent directories. It is reproducible: entries sorted, every one
// owned by 0:0, dated modTime (truncated to the second), directories 0755
// and files 0644, and each Added in index.json set to modTime, so the same
// extensions give the same bytes whenever they were added. Blobs are read
// from the store each time the layer is (never held in memory); the
// caller must not change the store meanwhile.
func (s *Store) Layer(modTime time.Time) (v1.Layer, error) {
	files, err := s.render(modTime)
	if err != nil {
		return nil, err
	}
	return &tarLayer{files: files, mtime: modTime.UTC().Truncate(time.Second)}, nil
}

// render lists the layer's entries, sorted, checking that every blob is
// there.
func (s *Store) render(modTime time.Time) ([]layerFile, error) {
	fail := func(err error) ([]layerFile, error) {
		return nil, fmt.Errorf("extension store %s: %w", s.Dir, err)
	}
	idx, err := s.readIndex()
	if err != nil {
		return fail(err)
	}
	stamp := modTime.UTC().Truncate(time.Second).Format(time.RFC3339Nano)
	out := *idx
	out.Manifests = nil
	blobs := map[string]int64{}
	for _, d := range idx.Manifests {
		if !isSignature(d) {
			d.Annotations = copyMap(d.Annotations)
			d.Annotations[AnnotationAdded] = stamp
		}
		out.Manifests = append(out.Manifests, d)
		raw, err := s.readSmall(d.Digest, d.Size)
		if err != nil {
			return fail(fmt.Errorf("manifest %s: %w", d.Digest, err))
		}
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return fail(fmt.Errorf("manifest %s: %w", d.Digest, err))
		}
		blobs[d.Digest.Hex] = d.Size
		for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if b.Digest.Algorithm != "sha256" {
				return fail(fmt.Errorf("manifest %s: blob %s is not sha256", d.Digest, b.Digest))
			}
			blobs[b.Digest.Hex] = b.Size
		}
	}
	if out.MediaType == "" {
		out.MediaType = types.OCIImageIndex
	}
	index, err := json.MarshalIndent(&out, "", "   ")
	if err != nil {
		return fail(err)
	}
	base := strings.TrimPrefix(ImageDir, "/")
	files := []layerFile{
		{name: base + "/oci-layout", body: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{name: base + "/index.json", body: index},
		{name: base + "/blobs", dir: true},
		{name: base + "/blobs/sha256", dir: true},
	}
	for d := path.Dir(base); d != "."; d = path.Dir(d) {
		files = append(files, layerFile{name: d, dir: true})
	}
	files = append(files, layerFile{name: base, dir: true})
	for hex, size := range blobs {
		p := s.blobPath(v1.Hash{Algorithm: "sha256", Hex: hex})
		fi, err := os.Stat(p)
		if err != nil {
			return fail(err)
		}
		if fi.Size() != size {
			return fail(fmt.Errorf("blob %s is %d bytes, want %d", p, fi.Size(), size))
		}
		files = append(files, layerFile{name: base + "/blobs/sha256/" + hex, file: p, size: size})
	}
	for i := range files {
		if files[i].file == "" && !files[i].dir {
			files[i].size = int64(len(files[i].body))
		}
	}
	// A parent sorts before its children.
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	return files, nil
}

func copyMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m)+1)
	for k, v := range m {
		c[k] = v
	}
	return c
}

// WriteTar writes the layer Layer makes to w.
func (s *Store) WriteTar(w io.Writer, modTime time.Time) error {
	files, err := s.render(modTime)
	if err != nil {
		return err
	}
	return writeTar(w, files, modTime.UTC().Truncate(time.Second))
}

func writeTar(w io.Writer, files []layerFile, mtime time.Time) error {
	tw := tar.NewWriter(w)
	for _, f := range files {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: f.size, ModTime: mtime, Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag, h.Name, h.Mode, h.Size = tar.TypeDir, f.name+"/", 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("extension store: %s: %w", f.name, err)
		}
		switch {
		case f.dir:
		case f.file != "":
			if err := copyFile(tw, f); err != nil {
				return err
			}
		default:
			if _, err := tw.Write(f.body); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

func copyFile(w io.Writer, f layerFile) error {
	src, err := os.Open(f.file)
	if err != nil {
		return fmt.Errorf("extension store: %w", err)
	}
	defer src.Close()
	if _, err := io.CopyN(w, src, f.size); err != nil {
		return fmt.Errorf("extension store: %s: %w", f.file, err)
	}
	return nil
}

// tarLayer is the rendered store as a v1.Layer: an uncompressed tar
// streamed from the store's files each time it is read. Its digest is
// computed on first demand (the builder's flatten never asks for it).
type tarLayer struct {
	files []layerFile
	mtime time.Time

	once   sync.Once
	digest v1.Hash
	size   int64
	err    error
}

func (l *tarLayer) Uncompressed() (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeTar(pw, l.files, l.mtime)) }()
	return pr, nil
}

func (l *tarLayer) Compressed() (io.ReadCloser, error) { return l.Uncompressed() }

func (l *tarLayer) sum() {
	l.once.Do(func() {
		h := sha256.New()
		c := &countWriter{w: h}
		if l.err = writeTar(c, l.files, l.mtime); l.err == nil {
			l.digest, l.size = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}, c.n
		}
	})
}

func (l *tarLayer) Digest() (v1.Hash, error)            { l.sum(); return l.digest, l.err }
func (l *tarLayer) DiffID() (v1.Hash, error)            { return l.Digest() }
func (l *tarLayer) Size() (int64, error)                { l.sum(); return l.size, l.err }
func (l *tarLayer) MediaType() (types.MediaType, error) { return types.OCIUncompressedLayer, nil }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
