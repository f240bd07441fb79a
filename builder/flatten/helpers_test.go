package flatten

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slate-os/slate/internal/testimage"
)

// rawLayer is a layer whose descriptors say what the test wants: honest
// ones from newLayer, lying ones after editing its fields.
type rawLayer struct {
	blob   []byte // as stored: compressed or not
	tar    []byte
	digest v1.Hash
	diffID v1.Hash
	size   int64
	mt     types.MediaType
	opens  int
}

func (l *rawLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *rawLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }
func (l *rawLayer) Compressed() (io.ReadCloser, error) {
	l.opens++
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}
func (l *rawLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.tar)), nil
}
func (l *rawLayer) Size() (int64, error)                { return l.size, nil }
func (l *rawLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

func hashOf(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum)}
}

func compress(t testing.TB, data []byte, comp string) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch comp {
	case "none":
		return data
	case "gzip":
		zw := gzip.NewWriter(&buf)
		zw.Write(data)
		zw.Close()
	case "zstd":
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(data)
		zw.Close()
	default:
		t.Fatalf("compression %q", comp)
	}
	return buf.Bytes()
}

// newLayer is a layer of tarBytes, compressed (none, gzip, zstd), its
// descriptors true.
func newLayer(t testing.TB, tarBytes []byte, comp string) *rawLayer {
	t.Helper()
	blob := compress(t, tarBytes, comp)
	mt := types.OCIUncompressedLayer
	switch comp {
	case "gzip":
		mt = types.OCILayer
	case "zstd":
		mt = types.OCILayerZStd
	}
	return &rawLayer{blob: blob, tar: tarBytes, digest: hashOf(blob), diffID: hashOf(tarBytes), size: int64(len(blob)), mt: mt}
}

func tarOf(t testing.TB, es ...testimage.Entry) []byte {
	t.Helper()
	b, err := testimage.Tar(es)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func imageOf(t testing.TB, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, l := range layers {
		var err error
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l}); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// layersImage stacks entry lists, uncompressed.
func layersImage(t testing.TB, layers ...[]testimage.Entry) v1.Image {
	t.Helper()
	var ls []v1.Layer
	for _, es := range layers {
		ls = append(ls, newLayer(t, tarOf(t, es...), "none"))
	}
	return imageOf(t, ls...)
}

// root is a flattened root: path → what is there ("f 644 body", "d 755",
// "s -> target", "h -> target", "c 1,3", "p").
type root map[string]string

// read is a consumer that checks the stream as tar2sqfs would need it
// (each name once, hard links after their targets, no whiteouts) and keeps
// what it holds.
func read(t testing.TB, into *root, clean *bool) Consumer {
	return func(_ context.Context, r io.Reader) error {
		got := root{}
		tr := tar.NewReader(r)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				*clean = true
				break
			}
			if err != nil {
				return err
			}
			if _, dup := got[h.Name]; dup {
				return fmt.Errorf("test: %s twice in the stream", h.Name)
			}
			for _, c := range strings.Split(h.Name, "/") {
				if strings.HasPrefix(c, whPrefix) {
					return fmt.Errorf("test: whiteout %s in the stream", h.Name)
				}
			}
			if h.Name != path.Clean(h.Name) || strings.HasPrefix(h.Name, "/") {
				return fmt.Errorf("test: unnormalized name %q", h.Name)
			}
			mode := fmt.Sprintf("%o", h.Mode&0o7777)
			switch h.Typeflag {
			case tar.TypeReg:
				b, err := io.ReadAll(tr)
				if err != nil {
					return err
				}
				got[h.Name] = "f " + mode + " " + string(b)
			case tar.TypeDir:
				got[h.Name] = "d " + mode
			case tar.TypeSymlink:
				got[h.Name] = "s -> " + h.Linkname
			case tar.TypeLink:
				if v, ok := got[h.Linkname]; !ok || strings.HasPrefix(v, "d ") || strings.HasPrefix(v, "h ") {
					return fmt.Errorf("test: hard link %s -> %s before its target, or to a directory or link", h.Name, h.Linkname)
				}
				got[h.Name] = "h -> " + h.Linkname
			case tar.TypeChar:
				got[h.Name] = fmt.Sprintf("c %d,%d", h.Devmajor, h.Devminor)
			case tar.TypeFifo:
				got[h.Name] = "p"
			default:
				return fmt.Errorf("test: type %q for %s", h.Typeflag, h.Name)
			}
		}
		*into = got
		return nil
	}
}

// flat flattens img; the mode is forced when m is not modeAuto.
func flat(t testing.TB, img v1.Image, opt Options) (root, error) {
	t.Helper()
	var got root
	var clean bool
	err := Stream(context.Background(), img, opt, read(t, &got, &clean))
	if err != nil {
		if clean {
			t.Errorf("the consumer saw a clean end of a stream that failed: %v", err)
		}
		return nil, err
	}
	return got, nil
}

func (r root) String() string {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "  %s: %s\n", n, r[n])
	}
	return b.String()
}

func equal(a, b root) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func wantErr(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one saying %q", parts)
	}
	if errors.Is(err, errBail) {
		t.Fatalf("errBail escaped: %v", err)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not say %q", err, p)
		}
	}
}

// Entry shorthands.
func F(name, body string) testimage.Entry { return testimage.Entry{Name: name, Body: body} }
func D(name string) testimage.Entry       { return testimage.Entry{Name: name, Type: tar.TypeDir} }
func L(name, target string) testimage.Entry {
	return testimage.Entry{Name: name, Type: tar.TypeLink, Link: target}
}
func S(name, target string) testimage.Entry {
	return testimage.Entry{Name: name, Type: tar.TypeSymlink, Link: target}
}
