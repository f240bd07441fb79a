package artifact

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fileLayer is a v1.Layer over a file whose digest and size are already
// known (Write computes them while it copies the input into the layout).
// Its stream is checked against them, so a file that changed underneath
// fails instead of being written under the wrong digest.
type fileLayer struct {
	path      string
	digest    v1.Hash
	size      int64
	mediaType types.MediaType
	title     string // its AnnotationTitle in the manifest
}

var _ v1.Layer = (*fileLayer)(nil)

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	return l.Compressed()
}
func (l *fileLayer) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	return newVerifyReader(f, l.digest, l.size, l.path), nil
}

// rawLayer wraps a layer read from a layout or a registry: its stream is the
// stored bytes (no decompression, whatever they look like), DiffID is its
// digest, and, when verify is set, the stream is checked against the
// descriptor's digest and size (ggcr's layout reader does not check; its
// registry reader does, so that stream is not hashed twice).
type rawLayer struct {
	layer  v1.Layer
	desc   v1.Descriptor
	verify bool
	where  string
}

var _ v1.Layer = (*rawLayer)(nil)

func (l *rawLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *rawLayer) DiffID() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *rawLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *rawLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *rawLayer) Uncompressed() (io.ReadCloser, error) {
	return l.Compressed()
}
func (l *rawLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.layer.Compressed()
	if err != nil {
		return nil, fmt.Errorf("%s: layer %s: %w", l.where, l.desc.Digest, err)
	}
	if !l.verify {
		return rc, nil
	}
	return newVerifyReader(rc, l.desc.Digest, l.desc.Size, l.where), nil
}

// verifyReader hashes what passes through it and, at the end of the
// stream, returns an error instead of io.EOF unless both size and sha256
// digest match.
type verifyReader struct {
	rc    io.ReadCloser
	h     hash.Hash
	want  v1.Hash
	size  int64
	n     int64
	where string
	err   error
}

func newVerifyReader(rc io.ReadCloser, want v1.Hash, size int64, where string) *verifyReader {
	return &verifyReader{rc: rc, h: sha256.New(), want: want, size: size, where: where}
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.rc.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.n > v.size {
		v.err = fmt.Errorf("%s: blob %s is longer than its %d bytes", v.where, v.want, v.size)
		return n, v.err
	}
	if err == io.EOF {
		switch got := hex.EncodeToString(v.h.Sum(nil)); {
		case v.n != v.size:
			err = fmt.Errorf("%s: blob %s is %d bytes, want %d", v.where, v.want, v.n, v.size)
		case v.want.Algorithm != "sha256" || got != v.want.Hex:
			err = fmt.Errorf("%s: blob %s has digest sha256:%s", v.where, v.want, got)
		}
	}
	if err != nil {
		v.err = err
	}
	return n, err
}

func (v *verifyReader) Close() error { return v.rc.Close() }
