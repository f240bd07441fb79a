package spec

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slate-os/slate/signature"
)

const good = `
apiVersion: slate.dev/v1alpha1
kind: ImageSpec
source: oci:build/reference
version: "1.4.0"
disk:
  slotSize: 2GiB
  espSize: 256MiB
root:
  compression: xz
kernel:
  extraCmdline: [quiet]
initramfs:
  modules: [e1000, virtio_net]
outputs:
  disk: node.qcow2
  format: qcow2
  artifact: node.oci
`

func TestParseGood(t *testing.T) {
	s, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if s.Disk.SlotSize != 2<<30 || s.Disk.ESPSize != 256<<20 || s.Version != "1.4.0" ||
		s.CompressionOrDefault() != "xz" || len(s.Initramfs.Modules) != 2 || s.Outputs.Format != "qcow2" {
		t.Errorf("parsed wrongly: %+v", s)
	}
	if got, want := s.Cmdline(), "console=tty0 console=ttyS0,115200 ro panic=10 systemd.gpt_auto=0 quiet"; got != want {
		t.Errorf("Cmdline = %q, want %q", got, want)
	}
}

func TestCmdlinePanic(t *testing.T) {
	for _, tc := range []struct {
		name         string
		cmdline, ext []string
		want         string
	}{
		{"defaults", nil, nil, "console=tty0 console=ttyS0,115200 ro panic=10 systemd.gpt_auto=0"},
		{"own console", []string{"console=ttyS1"}, nil, "console=ttyS1 panic=10 systemd.gpt_auto=0"},
		{"own panic in cmdline", []string{"console=ttyS1", "panic=0"}, []string{"quiet"}, "console=ttyS1 panic=0 systemd.gpt_auto=0 quiet"},
		{"own panic in extras", nil, []string{"panic=-1"}, "console=tty0 console=ttyS0,115200 ro systemd.gpt_auto=0 panic=-1"},
		// panic_on_oops= and panic_print= are other parameters: the timeout is still needed.
		{"panic_on_oops", nil, []string{"panic_on_oops=1"}, "console=tty0 console=ttyS0,115200 ro panic=10 systemd.gpt_auto=0 panic_on_oops=1"},
		{"own gpt_auto", nil, []string{"systemd.gpt_auto=1"}, "console=tty0 console=ttyS0,115200 ro panic=10 systemd.gpt_auto=1"},
		{"systemd.gpt_auto_x is another parameter", nil, []string{"systemd.gpt_auto_x=1"}, "console=tty0 console=ttyS0,115200 ro panic=10 systemd.gpt_auto=0 systemd.gpt_auto_x=1"},
	} {
		s := Spec{Kernel: Kernel{Cmdline: tc.cmdline, ExtraCmdline: tc.ext}}
		if got := s.Cmdline(); got != tc.want {
			t.Errorf("%s: Cmdline = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown top", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\nsorce: x\n", "sorce (line 3): unknown field"},
		{"unknown nested", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\ndisk:\n  slotsize: 1GiB\n", `disk.slotsize (line 4): unknown field (did you mean "slotSize"?)`},
		{"bad size", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\ndisk:\n  slotSize: lots\n", `disk.slotSize (line 4): invalid size "lots"`},
		{"wrong type", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\ninitramfs:\n  modules: e1000\n", "initramfs.modules (line 4): want a list"},
		{"list item", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\ninitramfs:\n  modules: [ok, 'b d']\n", "initramfs.modules[1]"},
		{"kind", "apiVersion: slate.dev/v1alpha1\nkind: Node\n", `kind: got "Node"`},
		{"apiVersion", "kind: ImageSpec\n", `apiVersion: got ""`},
		{"compression", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\nroot: {compression: brotli}\n", "root.compression"},
		{"format", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\noutputs: {format: vdi}\n", `outputs.format: unknown format "vdi" (want one of raw, qcow2, vhd, vmdk, gce, raw.zst, raw.xz)`},
		{"gce name", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\noutputs: {format: gce, disk: out/node.raw}\n",
			`outputs.disk: "out/node.raw": outputs.format gce writes disk.raw in a gzip'd tar, which GCE imports as a .tar.gz: name it e.g. out/node.tar.gz`},
		{"slate arg", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\nkernel: {extraCmdline: [slate.slot=b]}\n", "kernel.cmdline"},
		{"slate.config", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\nkernel: {cmdline: ['\"slate.config=data:,x\"']}\n", "kernel.cmdline"},
		{"update key empty", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\nupdate: {publicKeys: ['']}\n", "update.publicKeys[0]: empty"},
		{"update key bad PEM", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\nupdate:\n  publicKeys:\n    - |\n      -----BEGIN PUBLIC KEY-----\n      AAAA\n      -----END PUBLIC KEY-----\n", "update.publicKeys[0]"},
		{"update unknown", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\nupdate: {publicKey: x}\n", "update.publicKey (line 3): unknown field"},
		{"allowUnsigned type", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\nupdate: {allowUnsigned: maybe}\n", "update.allowUnsigned"},
		{"twice", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\nversion: a\nversion: b\n", "version (line 4): field given twice"},
		{"syntax", "apiVersion: [\n", "document"},
		{"empty", "", "empty document"},
		{"esp small", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\ndisk: {espSize: 8MiB}\n", "disk.espSize"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// Every format the builder writes is a valid outputs.format; a GCE image's
// name ends in .tar.gz.
func TestOutputsFormat(t *testing.T) {
	for _, tc := range []struct {
		format, disk, want string // want: "" valid, else part of the error
	}{
		{"", "node.raw", ""},
		{"raw", "node.raw", ""},
		{"qcow2", "node.qcow2", ""},
		{"vhd", "node.vhd", ""},
		{"vmdk", "node.vmdk", ""},
		{"gce", "node.tar.gz", ""},
		{"gce", "", ""}, // no disk: nothing to name (an artifact-only build)
		{"raw.zst", "node.raw.zst", ""},
		{"raw.xz", "node.raw.xz", ""},
		{"gce", "node.tgz", "name it e.g. node.tar.gz"},
		{"gce", "node.tar", "name it e.g. node.tar.gz"},
		{"gce", "/out/disk.img", "name it e.g. /out/disk.tar.gz"},
		{"zst", "node.raw.zst", `unknown format "zst"`},
		{"VHD", "node.vhd", `unknown format "VHD"`},
	} {
		s := Spec{Outputs: Outputs{Disk: tc.disk, Format: tc.format}}
		err := s.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("format %q disk %q: %v, want %q", tc.format, tc.disk, err, tc.want)
		}
	}
}

func TestSize(t *testing.T) {
	for in, want := range map[string]Size{"1GiB": 1 << 30, "512M": 512 << 20, "4096": 4096, "2 G": 2 << 30, "10KiB": 10240} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "1.5G", "1PB", "G"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	if s := Size(3 << 30).String(); s != "3GiB" {
		t.Errorf("String = %s", s)
	}
}

func TestExamplesParse(t *testing.T) {
	files, err := filepath.Glob("../../configs/examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Error(err)
		}
	}
}

// update.publicKeys: files relative to the spec file, inline PEM blocks;
// each read and parsed at build time, errors naming the entry.
func TestUpdateKeys(t *testing.T) {
	dir := t.TempDir()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ecPEM, _ := signature.MarshalPublicKey(ec.Public())
	edPEM, _ := signature.MarshalPublicKey(ed.Public())
	os.MkdirAll(filepath.Join(dir, "keys"), 0o755)
	os.WriteFile(filepath.Join(dir, "keys", "release.pub"), ecPEM, 0o644)
	doc := "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\nupdate:\n  allowUnsigned: true\n  publicKeys:\n    - keys/release.pub\n    - |\n" +
		"      " + strings.ReplaceAll(strings.TrimSpace(string(edPEM)), "\n", "\n      ") + "\n"
	path := filepath.Join(dir, "spec.yaml")
	os.WriteFile(path, []byte(doc), 0o644)
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Update.AllowUnsigned || len(s.Update.PublicKeys) != 2 || s.Update.PublicKeys[0] != filepath.Join(dir, "keys", "release.pub") {
		t.Fatalf("update %+v", s.Update)
	}
	keys, err := s.UpdatePublicKeys()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || signature.KeyID(keys[0]) != signature.KeyID(ec.Public()) || signature.KeyID(keys[1]) != signature.KeyID(ed.Public()) {
		t.Errorf("keys %v", keys)
	}

	for _, c := range []struct {
		key, want string
	}{
		{filepath.Join(dir, "missing.pub"), "update.publicKeys[0]: reading the key: open " + filepath.Join(dir, "missing.pub")},
		{path, "update.publicKeys[0] (" + path + "): "},
	} {
		s := Spec{Update: Update{PublicKeys: []string{c.key}}}
		if _, err := s.UpdatePublicKeys(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.key, err, c.want)
		}
	}
}

// Extension layouts are relative to the spec file, as keys are; registry
// references are left as they are.
func TestExtensions(t *testing.T) {
	dir := t.TempDir()
	doc := "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\nextensions:\n  - oci:ext/gpu.oci:1.0\n  - oci:/abs/tools.oci\n  - registry.example/ext/debug:2\n"
	path := filepath.Join(dir, "spec.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"oci:" + filepath.Join(dir, "ext/gpu.oci:1.0"), "oci:/abs/tools.oci", "registry.example/ext/debug:2"}
	if strings.Join(s.Extensions, " ") != strings.Join(want, " ") {
		t.Errorf("extensions %q, want %q", s.Extensions, want)
	}
	if _, err := Parse([]byte("apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\nextensions: ['a b']\n")); err == nil || !strings.Contains(err.Error(), "extensions[0]") {
		t.Errorf("an extension with a space: %v", err)
	}
}

// secureBoot: the key and its certificate go together, enrollKeys and sbat
// need them, sbat is a generation; errors name the field. Paths are
// relative to the spec file.
func TestSecureBoot(t *testing.T) {
	const head = "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\nsecureBoot:\n"
	for _, tc := range []struct{ name, body, want string }{
		{"key without certificate", "  key: db.key\n", "secureBoot.certificate: missing"},
		{"certificate without key", "  certificate: db.crt\n", "secureBoot.key: missing"},
		{"enrollKeys without key", "  enrollKeys: keys\n", "secureBoot.key: missing"},
		{"sbat without key", "  sbat: 2\n", "secureBoot.key: missing"},
		{"negative sbat", "  key: db.key\n  certificate: db.crt\n  sbat: -1\n", "secureBoot.sbat: -1 is not a generation"},
		{"huge sbat", "  key: db.key\n  certificate: db.crt\n  sbat: 99999999\n", "secureBoot.sbat: 99999999 is not a generation"},
		{"sbat not a number", "  key: db.key\n  certificate: db.crt\n  sbat: two\n", "secureBoot.sbat"},
		{"unknown field", "  keys: db.key\n", "secureBoot.keys (line 4): unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(head + tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}

	// Off: no secureBoot, or an empty one.
	for _, doc := range []string{"apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\n", head + "  {}\n"} {
		s, err := Parse([]byte(doc))
		if err != nil || s.SecureBoot.Enabled() {
			t.Errorf("%q: %v, enabled %v", doc, err, s != nil && s.SecureBoot.Enabled())
		}
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "spec.yaml")
	doc := head + "  key: keys/db.key\n  certificate: /abs/db.crt\n  enrollKeys: keys\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := SecureBoot{Key: filepath.Join(dir, "keys/db.key"), Certificate: "/abs/db.crt", EnrollKeys: filepath.Join(dir, "keys")}
	if s.SecureBoot != want || !s.SecureBoot.Enabled() || s.SecureBoot.SBATGeneration() != 1 {
		t.Errorf("secureBoot %+v (generation %d), want %+v, generation 1", s.SecureBoot, s.SecureBoot.SBATGeneration(), want)
	}
	if g := (SecureBoot{Key: "k", Certificate: "c", SBAT: 7}).SBATGeneration(); g != 7 {
		t.Errorf("SBATGeneration = %d, want 7", g)
	}
}
