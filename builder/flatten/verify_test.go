package flatten

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"io"
	"log"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slate-os/slate/builder/source"
)

// noise is incompressible: a changed byte in it changes a gzip stream's
// data, not its structure.
func noise(n int) string {
	r := rand.New(rand.NewPCG(9, 9))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

// tamper changes 15 bytes in the middle: same size, other content.
func tamper(b []byte) []byte {
	out := bytes.Clone(b)
	for i := len(out)/2 - 7; i < len(out)/2+8; i++ {
		out[i] ^= 0x5a
	}
	return out
}

func baseEntries() Es {
	return Es{D("etc"), F("etc/os-release", "ID=test\n"), D("usr"), F("usr/big", noise(64<<10)), F("usr/tail", "the end")}
}

// tamperingRegistry serves every blob as stored, except bad: its bytes
// tampered. gets counts each blob's downloads.
type tamperingRegistry struct {
	registry.BlobHandler
	bad  v1.Hash
	mu   sync.Mutex
	gets map[v1.Hash]int
}

func (r *tamperingRegistry) Get(ctx context.Context, repo string, h v1.Hash) (io.ReadCloser, error) {
	r.mu.Lock()
	r.gets[h]++
	r.mu.Unlock()
	rc, err := r.BlobHandler.Get(ctx, repo, h)
	if err != nil || h != r.bad {
		return rc, err
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(tamper(b))), nil
}

func (r *tamperingRegistry) Put(ctx context.Context, repo string, h v1.Hash, rc io.ReadCloser) error {
	return r.BlobHandler.(registry.BlobPutHandler).Put(ctx, repo, h, rc)
}

func (r *tamperingRegistry) Stat(ctx context.Context, repo string, h v1.Hash) (int64, error) {
	return r.BlobHandler.(registry.BlobStatHandler).Stat(ctx, repo, h)
}

// serve pushes img to an in-process registry and opens it by digest, as
// `slate build --source HOST/REPO@sha256:...` would.
func serve(t *testing.T, img v1.Image, reg *tamperingRegistry) v1.Image {
	t.Helper()
	reg.BlobHandler = registry.NewInMemoryBlobHandler()
	reg.gets = map[v1.Hash]int{}
	srv := httptest.NewServer(registry.New(registry.WithBlobHandler(reg), registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(srv.URL, "http://")
	tag, err := name.NewTag(host+"/node:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	got, err := source.Open(host+"/node@"+d.String(), source.Options{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestTamperedRegistryLayer(t *testing.T) {
	for _, comp := range []string{"gzip", "none", "zstd"} {
		t.Run(comp, func(t *testing.T) {
			base := newLayer(t, tarOf(t, baseEntries()...), comp)
			top := newLayer(t, tarOf(t, F("etc/motd", "hi")), comp)
			img := imageOf(t, base, top)
			reg := &tamperingRegistry{}
			got, err := flat(t, serve(t, img, reg), Options{WorkDir: t.TempDir()})
			if err != nil {
				t.Fatalf("untampered: %v", err)
			}
			if got["usr/tail"] != "f 644 the end" {
				t.Fatalf("untampered root:\n%s", got)
			}
			reg.bad = base.digest
			_, err = flat(t, serve(t, img, reg), Options{WorkDir: t.TempDir()})
			wantErr(t, err, "layer "+base.digest.String()+" (1 of 2)")
		})
	}
}

// writeLayout writes img as an OCI layout; the path of its first layer's
// blob.
func writeLayout(t *testing.T, img v1.Image) (dir string, blob func(v1.Hash) string) {
	t.Helper()
	dir = t.TempDir()
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	return dir, func(h v1.Hash) string { return filepath.Join(dir, "blobs", h.Algorithm, h.Hex) }
}

func editInPlace(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, tamper(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLayoutBlobEditedInPlace(t *testing.T) {
	for _, comp := range []string{"gzip", "none"} {
		t.Run(comp, func(t *testing.T) {
			base := newLayer(t, tarOf(t, baseEntries()...), comp)
			img := imageOf(t, base)
			dir, blob := writeLayout(t, img)
			open := func() v1.Image {
				img, err := source.Open("oci:"+dir, source.Options{})
				if err != nil {
					t.Fatal(err)
				}
				return img
			}
			if _, err := flat(t, open(), Options{}); err != nil {
				t.Fatalf("untouched layout: %v", err)
			}
			editInPlace(t, blob(base.digest))
			_, err := flat(t, open(), Options{})
			wantErr(t, err, "layer "+base.digest.String())
		})
	}
	t.Run("config", func(t *testing.T) {
		img := imageOf(t, newLayer(t, tarOf(t, baseEntries()...), "gzip"))
		dir, blob := writeLayout(t, img)
		cfg, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		editInPlace(t, blob(cfg))
		limg, err := source.Open("oci:"+dir, source.Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = flat(t, limg, Options{})
		wantErr(t, err, "config "+cfg.String())
	})
}

// fileLayer is a layer read from a file, as a layout's, that is another
// file at the next reading.
type fileLayer struct {
	*rawLayer
	files []string
	opens int
}

func (l *fileLayer) Compressed() (io.ReadCloser, error) {
	f := l.files[min(l.opens, len(l.files)-1)]
	l.opens++
	return os.Open(f)
}

func TestLayerChangedBetweenReadings(t *testing.T) {
	// A name twice: the one pass gives up, the two read the file twice.
	l := newLayer(t, tarOf(t, F("a", "one"), F("usr-big", noise(8<<10)), F("a", "two")), "none")
	dir := t.TempDir()
	first, second := filepath.Join(dir, "1"), filepath.Join(dir, "2")
	os.WriteFile(first, l.blob, 0o644)
	os.WriteFile(second, tamper(l.blob), 0o644)

	got, err := flat(t, imageOf(t, &fileLayer{rawLayer: l, files: []string{first}}), Options{})
	if err != nil || got["a"] != "f 644 two" {
		t.Fatalf("unchanged: %v\n%s", err, got)
	}
	fl := &fileLayer{rawLayer: l, files: []string{first, first, second}}
	_, err = flat(t, imageOf(t, fl), Options{})
	wantErr(t, err, "layer "+l.digest.String())
	if fl.opens != 3 {
		t.Errorf("the layer was opened %d times, want 3 (one pass, then two)", fl.opens)
	}
}

func TestBlobsReadOnce(t *testing.T) {
	// The one pass gives up on the top layer; the blobs it read are copied
	// as they are read, and the second reading takes the copies.
	base := newLayer(t, tarOf(t, baseEntries()...), "gzip")
	top := newLayer(t, tarOf(t, F("etc/motd", "one"), F("etc/motd", "two")), "gzip")
	img := imageOf(t, base, top)
	reg := &tamperingRegistry{}
	work := t.TempDir()
	got, err := flat(t, serve(t, img, reg), Options{WorkDir: work})
	if err != nil {
		t.Fatal(err)
	}
	if got["etc/motd"] != "f 644 two" {
		t.Errorf("etc/motd: %q, want the last entry's", got["etc/motd"])
	}
	for _, l := range []*rawLayer{base, top} {
		if n := reg.gets[l.digest]; n != 1 {
			t.Errorf("blob %s downloaded %d times", l.digest, n)
		}
	}
	if left, _ := os.ReadDir(work); len(left) != 0 {
		t.Errorf("the work directory keeps %d files", len(left))
	}
}

func TestDiffIDMismatch(t *testing.T) {
	l := newLayer(t, tarOf(t, baseEntries()...), "gzip")
	l.diffID = hashOf([]byte("another layer"))
	_, err := flat(t, imageOf(t, l), Options{})
	wantErr(t, err, "layer "+l.digest.String(), "the config's diff_id is "+l.diffID.String())
}

func TestTruncatedGzip(t *testing.T) {
	l := newLayer(t, tarOf(t, baseEntries()...), "gzip")
	l.blob = l.blob[:len(l.blob)-100]
	// The manifest names the truncated blob: only the decompression can tell.
	l.digest, l.size = hashOf(l.blob), int64(len(l.blob))
	_, err := flat(t, imageOf(t, l), Options{})
	wantErr(t, err, "layer "+l.digest.String(), "ends early")
}

func TestBlobLongerThanItsDescriptor(t *testing.T) {
	l := newLayer(t, tarOf(t, baseEntries()...), "gzip")
	l.size -= 10
	_, err := flat(t, imageOf(t, l), Options{})
	wantErr(t, err, "layer "+l.digest.String(), "more than the")
}

// 64 GiB of holes, from GNU tar 1.34 (--sparse), gzipped: old GNU sparse
// ('S'), PAX sparse 1.0 and 0.1.
var sparse = map[string]string{
	"gnu":     "H4sIAAAAAAACA+3QMQrCQBAF0D2CR9gj7G529SCewEK0C8Sk9+iGSBoLBSEW8l7zB2Zg4F+nyzlsLM32tS45e81lzq1LrWuHknNIueRaQjyGH5hu42mIMQx9P767+7T/2v0Zu7WptZFNHgAAAAAAAAAAAPAnHuVQr6UAKAAA",
	"pax 1.0": "H4sIAAAAAAACA+3UTWrDMBAFYK19Cp9AntGvvfA27aoUSg8gWtG6xHGRHQg9feWsXEOTRUMg9H0biRkJbKQnWT2Gw30MrzGN1fv+LYrLo8wZcxyz9UiaWLDVZLX1ilkQM+fl5UFcwX6cQsqfIv4npcq7h2c5foY0RtmHjyG1XKyq3S5XqVBmWd2FPrbzjSm0XdZTDNux+4qtqz03xjuvXaGp7Kcub2DfONtYrb3UtjZKN2zmbjjZffm9K+AvZJWP7ul4cptuG6WimujCD8GZ/PM8/5l/yzrnn66Z/zQM06l15/rrn7sRXCxjSogTAAAAAAAAAAAAAAAAAAAAwI35Bpznv2wAKAAA",
	"pax 0.1": "H4sIAAAAAAACA+3UTWrDMBAFYK19Ch+gyBqNfuyFt21XpVB6ADUVrUlcB8uG0NPXzsoJNKEQvOn7NhJ6QkhII1k8h8NjDO+xT8Xn+BHF7amJM+bYTs5bxcSCLCvL1msioYjIeJEfxArGNIR+2or4n5jyh6dXmfahT1Gm5jvWrvRUGe88u0y7Zfw1tm+7brNNNWXanCShjfX8fDLWy/E27Jfr3amMVd4OzTSbfOVsZZm9ZFsazRWZOQ0X083vqYC/k8V0Wy/Hy7pvdlFqVSq68Udwrf7n/mn9W2IjcrVm/fddN1yady0/PxwAAAAAAAAAAAAAAAAAAAAAwAp+ANTPy1wAKAAA",
}

func TestSparseRefused(t *testing.T) {
	for kind, b64 := range sparse {
		t.Run(kind, func(t *testing.T) {
			blob, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				t.Fatal(err)
			}
			l := &rawLayer{blob: blob, digest: hashOf(blob), size: int64(len(blob)), mt: types.OCILayer}
			l.diffID = hashOf(gunzip(t, blob))
			start := time.Now()
			_, err = flat(t, imageOf(t, l), Options{})
			wantErr(t, err, "layer "+l.digest.String(), "/huge: a sparse file", "68719476736 bytes declared")
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBound(t *testing.T) {
	t.Run("bytes read", func(t *testing.T) {
		zeros := strings.Repeat("\x00", 5<<20)
		l := newLayer(t, tarOf(t, F("a", "a"), F("zeros", zeros)), "zstd")
		_, err := flat(t, imageOf(t, l), Options{SlotSize: 1 << 20})
		wantErr(t, err, "layer "+l.digest.String(), "expands to more than 4MiB, 4 × disk.slotSize (1MiB)", "at /zeros: ", "this entry's 5242880 bytes", "raise disk.slotSize")
	})
	t.Run("declared before read", func(t *testing.T) {
		// 64 GiB declared, no byte of it there: refused at the header,
		// not when the data runs out.
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: "huge", Typeflag: tar.TypeReg, Mode: 0o644, Size: 64 << 30})
		l := newLayer(t, buf.Bytes(), "gzip")
		_, err := flat(t, imageOf(t, l), Options{})
		wantErr(t, err, "layer "+l.digest.String(), "expands to more than 32GiB, slate's bound when the spec sets no disk.slotSize", "at /huge: ", "this entry's 68719476736 bytes", "set disk.slotSize")
	})
	t.Run("upper layers count", func(t *testing.T) {
		l := newLayer(t, tarOf(t, F("a", strings.Repeat("a", 3<<20))), "gzip")
		up := newLayer(t, tarOf(t, F("b", strings.Repeat("b", 3<<20))), "none")
		_, err := flat(t, imageOf(t, l), Options{Upper: []v1.Layer{up}, bound: 4 << 20})
		wantErr(t, err, "expands to more than 4MiB")
	})
}

func TestUpperLayers(t *testing.T) {
	base := newLayer(t, tarOf(t, D("usr"), D("usr/bin"), F("usr/bin/slate", "the image's"), F("usr/bin/sh", "sh")), "gzip")
	node := newLayer(t, tarOf(t, F("usr/bin/slate", "slate's")), "none")
	node.digest, node.diffID = v1.Hash{}, v1.Hash{} // nothing to check an upper layer against
	got, err := flat(t, imageOf(t, base), Options{Upper: []v1.Layer{node}})
	if err != nil {
		t.Fatal(err)
	}
	if got["usr/bin/slate"] != "f 644 slate's" || got["usr/bin/sh"] != "f 644 sh" {
		t.Errorf("root:\n%s", got)
	}
}

// The stream of a layer that fails at its end must not end cleanly: the
// consumer sees an error, and Stream returns the layer's, not the
// consumer's.
func TestConsumerSeesTheError(t *testing.T) {
	l := newLayer(t, tarOf(t, baseEntries()...), "none")
	l.blob = tamper(l.blob) // same size, valid tar, other bytes in usr/big
	var consumerErr error
	err := Stream(context.Background(), imageOf(t, l), Options{}, func(_ context.Context, r io.Reader) error {
		tr := tar.NewReader(r)
		for {
			_, err := tr.Next()
			if err == io.EOF {
				t.Error("the consumer saw the end of the archive")
				return nil
			}
			if err != nil {
				consumerErr = err
				return err
			}
		}
	})
	wantErr(t, err, "layer "+l.digest.String(), "not the layer the manifest names")
	if consumerErr == nil {
		t.Error("the consumer saw no error")
	}
}

// A docker-save archive names no layer digests (go-containerregistry
// computes them from the archive's own files): its config's diff_ids are
// the check. As docker save writes it (layers uncompressed) and as
// go-containerregistry does (gzipped).
func TestDockerArchiveLayerEdited(t *testing.T) {
	for _, comp := range []string{"none", "gzip"} {
		t.Run(comp, func(t *testing.T) {
			l := newLayer(t, tarOf(t, baseEntries()...), comp)
			img := imageOf(t, l)
			cfg, err := img.RawConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "image.tar")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			tw := tar.NewWriter(f)
			for _, e := range []struct {
				name string
				data []byte
			}{
				{"manifest.json", []byte(`[{"Config":"config.json","RepoTags":["node:1"],"Layers":["layer.tar"]}]`)},
				{"config.json", cfg},
				{"layer.tar", l.blob},
			} {
				tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data))})
				tw.Write(e.data)
			}
			tw.Close()
			f.Close()
			open := func() v1.Image {
				img, err := source.Open("docker-archive:"+path, source.Options{})
				if err != nil {
					t.Fatal(err)
				}
				return img
			}
			if _, err := flat(t, open(), Options{}); err != nil {
				t.Fatalf("untouched archive: %v", err)
			}
			archive, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			at := bytes.Index(archive, l.blob)
			if at < 0 {
				t.Fatal("the layer is not in the archive as is")
			}
			copy(archive[at:], tamper(l.blob))
			if err := os.WriteFile(path, archive, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = flat(t, open(), Options{})
			want := "its uncompressed bytes hash to" // same size, a valid tar: only the diff_id tells
			if comp == "gzip" {
				want = "gzip: " // the gzip checksum tells first
			}
			wantErr(t, err, "layer with diff_id "+l.diffID.String()+" (1 of 1): ", want)
		})
	}
}
