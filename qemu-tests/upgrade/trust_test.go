package upgrade_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/qemu-tests/testnode"
	"github.com/slate-os/slate/signature"
	"github.com/slate-os/slate/vm"
	"github.com/slate-os/slate/vm/vmtest"
)

// TestNoConfigRefusesUnsigned: trust comes from the image and fails closed.
// A v1 node booted with no node config at all (so no update.publicKey, no
// update.allowUnsigned) still checks signatures against the key v1 was
// built with: `slate upgrade` refuses an unsigned artifact, saying why and
// which key it wanted, and writes nothing; `slate status` says the policy
// comes from the image.
func TestNoConfigRefusesUnsigned(t *testing.T) {
	begin(t)
	v1img, v2 := image(t, "v1"), image(t, "v2")
	// Without a config the node has no network either: the artifact is a
	// layout on the node, v2's manifest and config only (the refusal comes
	// before any layer is read), unsigned.
	art := layoutHead(t, v2.Artifact)
	script := probe + "status BEFORE\n" +
		"mkdir -p /run/art && echo " + art + " | base64 -d | tar -xz -C /run/art\n" +
		"try unsigned slate upgrade --no-reboot oci:/run/art\n" +
		"status AFTER\n" + testnode.ThenPoweroff
	m := vmtest.Start(t, vm.Config{Name: "no-config", Disk: v1img.Disk, DiskFormat: "raw",
		FwCfgStrings: map[string]string{testnode.FwCfgTest: script}})
	b := waitBoot(t, m, exitTimeout)
	if b.Script == nil || !b.Ended {
		t.Fatalf("the script did not finish: %s; console:\n%s", b, tail(b.Lines, 80))
	}
	r := b.Script
	if rec := testnode.Record(t, r); rec.Config != nil && rec.Config.Applied {
		t.Fatalf("the node applied a config (%+v); the test needs none", rec.Config)
	}

	key := signature.KeyID(testKey().Public())
	out, _ := base64.StdEncoding.DecodeString(r.Get("OUT-unsigned"))
	msg := strings.TrimSpace(string(out))
	t.Logf("unsigned: exit %s: %s", r.Get("EXIT-unsigned"), msg)
	want := regexp.MustCompile(`not signed.*; updates must be signed by a trusted key: ` + regexp.QuoteMeta(key) + ` \(image /usr/lib/slate/update-keys/01.pub\)`)
	if r.Get("EXIT-unsigned") == "0" {
		t.Errorf("a node without a config installed an unsigned artifact")
	} else if !want.MatchString(msg) {
		t.Errorf("message %q does not say why (want %s)", msg, want)
	}
	if strings.Contains(msg, "upgrade: retiring") {
		t.Errorf("the agent started writing: %q", msg)
	}

	before, after := getStatusKey(t, r, "BEFORE"), getStatusKey(t, r, "AFTER")
	logStatus(t, "with no node config", r)
	if u := after.Update; u == nil || u.Policy != "signed" || len(u.Keys) != 1 || u.Keys[0].ID != key || u.Keys[0].From != "image" ||
		u.Keys[0].Where != "/usr/lib/slate/update-keys/01.pub" || u.NotBefore.IsZero() || u.Source != "" {
		t.Errorf("status: update %+v; want the policy \"signed\" by the image's key %s only, and the running image's time", u, key)
	}
	checkSlot(t, "after the refusal", after, "a", "good", "v1")
	if s := after.Slot("b"); s.State != "empty" {
		t.Errorf("after the refusal: %v, want slot b empty", s)
	}
	if !slotsEqual(before, after) {
		t.Errorf("the refusal changed the slots:\nbefore %v\nafter  %v", before.Slots, after.Slots)
	}
}

func slotsEqual(a, b *status) bool {
	x, _ := json.Marshal(a.Slots)
	y, _ := json.Marshal(b.Slots)
	return bytes.Equal(x, y)
}

// layoutHead is the artifact layout at dir without its layers (oci-layout,
// index.json, the manifest and the config), as a gzipped tar in base64.
func layoutHead(t *testing.T, dir string) string {
	t.Helper()
	read := func(rel string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	index := read("index.json")
	idx, err := v1.ParseIndexManifest(bytes.NewReader(index))
	if err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("%s/index.json: %v (%d manifests, want the artifact alone)", dir, err, len(idx.Manifests))
	}
	md := idx.Manifests[0].Digest
	manifest := read("blobs/sha256/" + md.Hex)
	m, err := v1.ParseManifest(bytes.NewReader(manifest))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range []struct {
		name string
		body []byte
	}{
		{"oci-layout", read("oci-layout")},
		{"index.json", index},
		{"blobs/sha256/" + md.Hex, manifest},
		{"blobs/sha256/" + m.Config.Digest.Hex, read("blobs/sha256/" + m.Config.Digest.Hex)},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(f.body)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}
