package extensions_test

import (
	"context"
	"crypto"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/agent/extensions"
	"github.com/slate-os/slate/agent/upgrade"
	"github.com/slate-os/slate/artifact"
	"github.com/slate-os/slate/signature"
	"github.com/slate-os/slate/sysext"
	"github.com/slate-os/slate/sysext/store"
	"github.com/slate-os/slate/sysext/store/storetest"
)

var (
	deb12 = sysext.Release{ID: "debian", VersionID: "12"}
	deb13 = sysext.Release{ID: "debian", VersionID: "13"}
)

func trusting(keys ...crypto.Signer) *upgrade.Policy {
	p := &upgrade.Policy{}
	for i, k := range keys {
		p.Keys = append(p.Keys, upgrade.TrustedKey{Key: k.Public(), ID: signature.KeyID(k.Public()), From: upgrade.FromImage,
			Where: "/usr/lib/slate/update-keys/0" + string(rune('1'+i)) + ".pub"})
	}
	return p
}

// fakeRegistry is an in-memory registry that records the blobs read.
type fakeRegistry struct {
	host string
	opts []artifact.Option
	mu   sync.Mutex
	gets []string // GET paths
}

func startRegistry(t *testing.T) *fakeRegistry {
	t.Helper()
	f := &fakeRegistry{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			f.mu.Lock()
			f.gets = append(f.gets, r.URL.Path)
			f.mu.Unlock()
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.host = strings.TrimPrefix(srv.URL, "http://")
	f.opts = []artifact.Option{artifact.WithKeychain(authn.NewMultiKeychain())}
	return f
}

// read says whether the blob d was fetched since the last reset.
func (f *fakeRegistry) read(d v1.Hash) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.ContainsFunc(f.gets, func(p string) bool { return strings.HasSuffix(p, "/blobs/"+d.String()) })
}

func (f *fakeRegistry) reset() {
	f.mu.Lock()
	f.gets = nil
	f.mu.Unlock()
}

// push writes ext, signs it with key (unless nil; a bundle if bundle) and
// pushes it to repo:tag on the registry; it returns the manifest digest and
// the image layer's.
func (f *fakeRegistry) push(t *testing.T, ref string, ext storetest.Ext, key crypto.Signer, bundle bool) (v1.Hash, v1.Hash) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), ext.Name)
	d := ext.Write(t, dir)
	if key != nil {
		storetest.Sign(t, artifact.LayoutPrefix+dir, key, bundle)
	}
	if _, err := artifact.Push(dir, ref, f.opts...); err != nil {
		t.Fatal(err)
	}
	a, err := artifact.OpenExtension(artifact.LayoutPrefix + dir)
	if err != nil {
		t.Fatal(err)
	}
	ld, _ := a.ExtensionImage.Digest()
	return d, ld
}

func TestFetch(t *testing.T) {
	reg := startRegistry(t)
	key, other := storetest.Key(t), storetest.Key(t)
	gpu := reg.host + "/ext/gpu:1"
	gpu12, _ := reg.push(t, gpu, storetest.Ext{Name: "gpu", Version: "1", Release: sysext.ForHost(deb12), Seed: 1}, key, false)
	gpu13, _ := reg.push(t, gpu, storetest.Ext{Name: "gpu", Version: "1", Release: sysext.ForHost(deb13), Seed: 2}, key, false)
	bundled := reg.host + "/ext/bundled:1"
	bundledDigest, _ := reg.push(t, bundled, storetest.Ext{Name: "bundled", Version: "3", Release: sysext.ForHost(deb12), Seed: 3}, key, true)
	unsigned := reg.host + "/ext/unsigned:1"
	_, unsignedLayer := reg.push(t, unsigned, storetest.Ext{Name: "unsigned", Version: "1", Release: sysext.ForHost(deb12), Seed: 4}, nil, false)
	wrongKey := reg.host + "/ext/wrongkey:1"
	_, wrongLayer := reg.push(t, wrongKey, storetest.Ext{Name: "wrongkey", Version: "1", Release: sysext.ForHost(deb12), Seed: 5}, other, false)
	fedora := reg.host + "/ext/fedora:1"
	reg.push(t, fedora, storetest.Ext{Name: "fedora", Version: "1", Release: sysext.Release{ID: "fedora", VersionID: "40"}, Seed: 6}, key, false)
	missing := reg.host + "/ext/missing:1"
	keyID := signature.KeyID(key.Public())

	st := store.Open(filepath.Join(t.TempDir(), "store"))
	var lines []string
	opts := extensions.FetchOptions{
		Entries: []string{"tools", gpu, bundled, unsigned, wrongKey, fedora, missing},
		Host:    deb12, Policy: trusting(key), Store: st, Artifact: reg.opts,
		Log: func(format string, args ...any) { lines = append(lines, format) },
	}
	res, err := extensions.Fetch(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		index  int
		state  extensions.FetchState
		digest v1.Hash
		signed string
		reason string
	}
	check := func(res []extensions.FetchResult, ws []want) {
		t.Helper()
		if len(res) != len(ws) {
			t.Fatalf("%d results, want %d: %v", len(res), len(ws), res)
		}
		for i, w := range ws {
			r := res[i]
			if r.Index != w.index || r.Entry != opts.Entries[w.index] || r.State != w.state || r.SignedBy != w.signed ||
				(w.digest != v1.Hash{} && r.Digest != w.digest.String()) || !strings.Contains(r.Reason, w.reason) || r.OK() != (w.state == extensions.Fetched || w.state == extensions.AlreadyFetched) {
				t.Errorf("result %d: %s\nwant %+v", i, r, w)
			}
		}
	}
	// The name is never fetched; everything else once.
	check(res, []want{
		{1, extensions.Fetched, gpu12, keyID, ""},
		{2, extensions.Fetched, bundledDigest, keyID, ""},
		{3, extensions.FetchRefused, v1.Hash{}, "", "not signed"},
		{4, extensions.FetchRefused, v1.Hash{}, "", "updates must be signed by a trusted key: " + keyID},
		{5, extensions.NoMatch, v1.Hash{}, "", "nothing it offers is for ID=debian VERSION_ID=12: it offers fedora 1 for ID=fedora VERSION_ID=40 (it is for ID=fedora, this image is ID=debian)"},
		{6, extensions.FetchFailed, v1.Hash{}, "", "missing"},
	})
	if res[2].Releases != nil || res[3].Releases != nil || !slices.Equal(res[4].Releases, []string{"ID=fedora VERSION_ID=40"}) {
		t.Errorf("releases: %q %q %q", res[2].Releases, res[3].Releases, res[4].Releases)
	}
	if len(lines) != 6 {
		t.Errorf("logged %d lines, want one per reference", len(lines))
	}
	// Refused before a byte of the image was read.
	if reg.read(unsignedLayer) || reg.read(wrongLayer) {
		t.Error("the image of an extension the policy refuses was read")
	}
	es, err := st.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].Ref != gpu || es[0].Digest != gpu12 || es[1].Ref != bundled {
		t.Errorf("store: %+v", es)
	}
	for _, e := range es {
		a, err := st.Artifact(e.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if k, err := opts.Policy.Verify(a); err != nil || k == nil || k.ID != keyID {
			t.Errorf("%s from the store: %v, %v", e, k, err)
		}
	}

	// Again: what is there is not asked for.
	reg.reset()
	opts.Entries = []string{gpu, bundled}
	res, err = extensions.Fetch(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	check(res, []want{{0, extensions.AlreadyFetched, gpu12, "", ""}, {1, extensions.AlreadyFetched, bundledDigest, "", ""}})
	if len(reg.gets) != 0 {
		t.Errorf("asked the registry %v", reg.gets)
	}

	// Another release: the index's other entry.
	opts.Host = deb13
	opts.Entries = []string{gpu}
	res, err = extensions.Fetch(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	check(res, []want{{0, extensions.Fetched, gpu13, keyID, ""}})

	// update.allowUnsigned lets the unsigned one in, with a warning.
	opts.Host, opts.Entries = deb12, []string{unsigned}
	opts.Policy = trusting(key)
	opts.Policy.AllowUnsigned = []string{upgrade.FromConfig}
	res, err = extensions.Fetch(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	check(res, []want{{0, extensions.Fetched, v1.Hash{}, "", "WARNING: not verified"}})

	// A policy that trusts nothing fetches nothing.
	opts.Policy, opts.Entries = &upgrade.Policy{}, []string{wrongKey}
	if _, err := extensions.Fetch(context.Background(), opts); !errors.Is(err, upgrade.ErrNoTrust) {
		t.Errorf("no trust: %v", err)
	}
}

func writeOSRelease(t *testing.T, root, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "os-release"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPrepareUpgrade(t *testing.T) {
	reg := startRegistry(t)
	key := storetest.Key(t)
	gpu := reg.host + "/ext/gpu:1"
	gpu12, _ := reg.push(t, gpu, storetest.Ext{Name: "gpu", Version: "1", Release: sysext.ForHost(deb12), Seed: 1}, key, false)
	gpu13, _ := reg.push(t, gpu, storetest.Ext{Name: "gpu", Version: "1", Release: sysext.ForHost(deb13), Seed: 3}, key, false)
	old := reg.host + "/ext/old:1"
	oldDigest, _ := reg.push(t, old, storetest.Ext{Name: "old", Version: "1", Release: sysext.ForHost(deb12), Seed: 4}, key, false)
	only12 := reg.host + "/ext/only12:1"
	reg.push(t, only12, storetest.Ext{Name: "only12", Version: "1", Release: sysext.ForHost(deb12), Seed: 5}, key, false)

	root := t.TempDir()
	writeOSRelease(t, root, "ID=debian\nVERSION_ID=12\n")
	st := store.Open(filepath.Join(t.TempDir(), "store"))
	pol := trusting(key)
	// What the running release fetched.
	if _, err := extensions.Fetch(context.Background(), extensions.FetchOptions{
		Entries: []string{gpu, old}, Host: deb12, Policy: pol, Store: st, Artifact: reg.opts,
	}); err != nil {
		t.Fatal(err)
	}
	// A name fetched for the running release only (as `tools`, by a reference).
	tools12, _ := reg.push(t, reg.host+"/ext/tools:1", storetest.Ext{Name: "tools", Version: "1", Release: sysext.ForHost(deb12), Seed: 6}, key, false)
	if _, err := extensions.Fetch(context.Background(), extensions.FetchOptions{
		Entries: []string{reg.host + "/ext/tools:1"}, Host: deb12, Policy: pol, Store: st, Artifact: reg.opts,
	}); err != nil {
		t.Fatal(err)
	}

	update := &artifact.Artifact{Config: artifact.Config{Version: "2.0", OSRelease: deb13, Extensions: []artifact.CarriedExtension{
		{Name: "carried", Version: "5", Release: sysext.ForHost(deb13), Digest: "sha256:" + strings.Repeat("c", 64)},
		{Name: "stale", Version: "1", Release: sysext.ForHost(deb12), Digest: "sha256:" + strings.Repeat("d", 64)},
	}}}
	o := extensions.UpgradeOptions{Update: update, Root: root, FetchOptions: extensions.FetchOptions{Policy: pol, Store: st, Artifact: reg.opts}}

	t.Run("refused", func(t *testing.T) {
		o := o
		o.Entries = []string{gpu, "carried", "tools", "stale", only12, "nowhere"}
		before, _ := st.List()
		res, err := extensions.PrepareUpgrade(context.Background(), o)
		var ue *extensions.UpgradeError
		if !errors.As(err, &ue) || len(ue.Problems) != 4 || len(res) != 6 {
			t.Fatalf("PrepareUpgrade: %v (%d results)", err, len(res))
		}
		want := `upgrade to 2.0 refused, no slot written: 4 of the node config's extensions cannot be had for its os-release ID=debian VERSION_ID=13:
  extensions[2] tools: no match: neither in the node's store (` + st.Dir + `) nor carried by the image 2.0 (it carries carried 5, stale 1); ` +
			`tools 1 (` + tools12.String()[:19] + `): not for this image: it is for debian VERSION_ID=12, this image is VERSION_ID=13
  extensions[3] stale: no match: neither in the node's store (` + st.Dir + `) nor carried by the image 2.0 (it carries carried 5, stale 1); ` +
			`the image's stale 1: it is for debian VERSION_ID=12, this image is VERSION_ID=13
  extensions[4] ` + only12 + `: no match: nothing it offers is for ID=debian VERSION_ID=13: it offers only12 1 for ID=debian VERSION_ID=12 ARCHITECTURE=x86-64 (it is for debian VERSION_ID=12, this image is VERSION_ID=13)
  extensions[5] nowhere: no match: neither in the node's store (` + st.Dir + `) nor carried by the image 2.0 (it carries carried 5, stale 1)`
		if err.Error() != want {
			t.Errorf("error:\n%s\nwant\n%s", err, want)
		}
		if res[0].State != extensions.Fetched || res[0].Digest != gpu13.String() || res[1].State != extensions.InImage {
			t.Errorf("results: %v", res)
		}
		// Refused: nothing pruned (the fetched one is kept for the next try).
		after, _ := st.List()
		if len(after) != len(before)+1 {
			t.Errorf("store: %d entries before, %d after", len(before), len(after))
		}
	})

	t.Run("accepted and pruned", func(t *testing.T) {
		o := o
		o.Entries = []string{gpu, "carried"}
		var lines []string
		o.Log = func(format string, args ...any) { lines = append(lines, strings.TrimSpace(format)) }
		res, err := extensions.PrepareUpgrade(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 2 || res[0].State != extensions.AlreadyFetched || res[0].Digest != gpu13.String() || res[1].State != extensions.InImage {
			t.Errorf("results: %v", res)
		}
		es, err := st.List()
		if err != nil {
			t.Fatal(err)
		}
		var got []v1.Hash
		for _, e := range es {
			got = append(got, e.Digest)
		}
		// gpu for the running release (a rollback needs it) and the new
		// one; old and tools are gone.
		if !slices.Equal(got, []v1.Hash{gpu12, gpu13}) {
			t.Errorf("store after pruning: %v, want gpu12 %s and gpu13 %s (old %s)", got, gpu12, gpu13, oldDigest)
		}
	})

	t.Run("artifact before extensions", func(t *testing.T) {
		o := o
		o.Update = &artifact.Artifact{Config: artifact.Config{Version: "1.9"}}
		o.Entries = []string{gpu, "carried"}
		_, err := extensions.PrepareUpgrade(context.Background(), o)
		want := "upgrade to 1.9 refused: the artifact predates system extensions (its config has no osRelease to match them against), and the node config names extensions (" + gpu + ", carried)"
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("error:\n%v\nwant\n%s...", err, want)
		}
		o.Entries = nil
		if _, err := extensions.PrepareUpgrade(context.Background(), o); err != nil {
			t.Errorf("no extensions named: %v", err)
		}
	})
}
