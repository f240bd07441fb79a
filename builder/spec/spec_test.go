package spec

import (
	"path/filepath"
	"strings"
	"testing"
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
		{"format", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\noutputs: {format: vmdk}\n", "outputs.format"},
		{"slate arg", "apiVersion: slate.dev/v1alpha1\nkind: ImageSpec\nkernel: {extraCmdline: [slate.slot=b]}\n", "kernel.cmdline"},
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
