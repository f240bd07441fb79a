package upgrade_test

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/slate-os/slate/artifact"
)

// GuestHost is the host's 127.0.0.1 as QEMU user networking shows it to
// the guest.
const GuestHost = "10.0.2.2"

// fault is what the registry does wrong when serving one blob.
type fault int

const (
	// truncate stops the response half way and drops the connection.
	truncate fault = iota + 1
	// corrupt flips one byte in the middle: same size, another digest.
	corrupt
)

// testReg is an in-process OCI registry on 127.0.0.1 with blobs on disk
// (the artifacts are ~100 MB each), that can misbehave on chosen blobs and
// counts blob downloads.
type testReg struct {
	srv  *httptest.Server
	Host string // 127.0.0.1:PORT
	Port int
	opts []artifact.Option

	mu     sync.Mutex
	faults map[string]fault // request path → fault
	gets   map[string]int   // GET requests by path
}

var reg struct {
	once sync.Once
	r    *testReg
	err  error
}

// testRegistry starts the package's registry, once. It lives until the test
// process ends.
func testRegistry(t testing.TB) *testReg {
	t.Helper()
	reg.once.Do(func() {
		dir := filepath.Join(testDir(), "registry")
		if reg.err = os.MkdirAll(dir, 0o755); reg.err != nil {
			return
		}
		r := &testReg{faults: map[string]fault{}, gets: map[string]int{},
			opts: []artifact.Option{artifact.Insecure(), artifact.WithKeychain(authn.NewMultiKeychain())}}
		inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithBlobHandler(registry.NewDiskBlobHandler(dir)))
		r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			r.serve(inner, w, req)
		}))
		host, port, err := net.SplitHostPort(r.srv.Listener.Addr().String())
		if err != nil || host != "127.0.0.1" {
			reg.err = fmt.Errorf("test registry listens on %s: want 127.0.0.1 (%v)", r.srv.Listener.Addr(), err)
			return
		}
		r.Host = r.srv.Listener.Addr().String()
		r.Port, _ = strconv.Atoi(port)
		reg.r = r
	})
	if reg.err != nil {
		t.Fatalf("test registry: %v", reg.err)
	}
	return reg.r
}

// GuestRef is repo[:tag|@digest] in the registry as the guest names it.
func (r *testReg) GuestRef(repoRef string) string {
	return fmt.Sprintf("%s:%d/%s", GuestHost, r.Port, repoRef)
}

// Source is the node config's update.source.
func (r *testReg) Source() string { return r.GuestRef("slate/node") }

func blobPath(repo string, d v1.Hash) string { return "/v2/" + repo + "/blobs/" + d.String() }

// Fault makes GETs of blob d in repo misbehave.
func (r *testReg) Fault(repo string, d v1.Hash, f fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults[blobPath(repo, d)] = f
}

// Gets is how many times blob d of repo was asked for (GET).
func (r *testReg) Gets(repo string, d v1.Hash) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gets[blobPath(repo, d)]
}

func (r *testReg) serve(inner http.Handler, w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	f := r.faults[req.URL.Path]
	if req.Method == http.MethodGet {
		r.gets[req.URL.Path]++
	}
	r.mu.Unlock()
	if req.Method != http.MethodGet || f == 0 {
		inner.ServeHTTP(w, req)
		return
	}
	inner.ServeHTTP(&faultWriter{ResponseWriter: w, fault: f}, req)
}

// faultWriter passes a blob's response through, wrongly. The size is only
// known from Content-Length once the handler set it.
type faultWriter struct {
	http.ResponseWriter
	fault fault
	n     int64 // body bytes written so far
	size  int64
}

func (w *faultWriter) WriteHeader(code int) {
	w.size, _ = strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64)
	w.ResponseWriter.WriteHeader(code)
}

func (w *faultWriter) Write(p []byte) (int, error) {
	mid := w.size / 2
	switch w.fault {
	case truncate:
		if w.n+int64(len(p)) > mid {
			keep := max(mid-w.n, 0)
			w.ResponseWriter.Write(p[:keep])
			if fl, ok := w.ResponseWriter.(http.Flusher); ok {
				fl.Flush()
			}
			// net/http drops the connection without logging: the client
			// sees a body that ends short of Content-Length.
			panic(http.ErrAbortHandler)
		}
	case corrupt:
		if mid >= w.n && mid < w.n+int64(len(p)) {
			q := bytes.Clone(p)
			q[mid-w.n] ^= 0xff
			p = q
		}
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// push copies an artifact layout to repo, tagged with its version, and
// signs it there with the test key the nodes' config names.
func (r *testReg) push(t testing.TB, layoutDir, repo string) v1.Hash {
	t.Helper()
	return r.pushSigned(t, layoutDir, repo, testKey())
}

// pushSigned pushes as push does, signed by key; nil leaves it unsigned.
func (r *testReg) pushSigned(t testing.TB, layoutDir, repo string, key crypto.Signer) v1.Hash {
	t.Helper()
	start := time.Now()
	p, err := artifact.Push(layoutDir, r.Host+"/"+repo, r.opts...)
	if err != nil {
		t.Fatal(err)
	}
	d := p.Digest
	if key != nil {
		// By digest: the tag may hold an index (extensions for several
		// releases), which is not what is signed.
		if _, err := artifact.Sign(p.Ref.Context().Digest(d.String()).String(), key, p.Ref.Context().Name(), r.opts...); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("pushed %s to %s/%s in %.1fs", filepath.Base(layoutDir), r.Host, repo, time.Since(start).Seconds())
	return d
}

// rawManifest is a manifest to put as it is: remote.Put takes any Taggable.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

// putCrafted stores an artifact made of a config and a manifest written by
// the test (layers may name blobs the registry does not have) as repo:tag,
// and returns the manifest's digest.
func (r *testReg) putCrafted(t testing.TB, repo, tag string, cfg artifact.Config, layers []v1.Descriptor) v1.Hash {
	t.Helper()
	rawCfg, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ropts := []remote.Option{remote.WithAuthFromKeychain(authn.NewMultiKeychain())}
	repoName, err := name.NewRepository(r.Host+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(repoName, static.NewLayer(rawCfg, artifact.ConfigMediaType), ropts...); err != nil {
		t.Fatalf("crafted artifact %s: config: %v", repo, err)
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  artifact.ArtifactType,
		Config: v1.Descriptor{MediaType: artifact.ConfigMediaType, Size: int64(len(rawCfg)),
			Digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(rawCfg))}},
		Layers: layers,
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(repoName.Tag(tag), rawManifest{raw, types.OCIManifestSchema1}, ropts...); err != nil {
		t.Fatalf("crafted artifact %s: manifest: %v", repo, err)
	}
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(raw))}
}
